"""Many prompts, resumable: one folder per prompt, finished when its report.json (written last,
atomically) exists for the same prompt and reward model; a restarted run skips those and redoes any other."""

from __future__ import annotations

import json
import re
from pathlib import Path


def read_prompts(path: Path) -> list[str]:
    """One prompt per non-empty line (a JSONL line {"prompt": ...} also works). Raises ValueError naming the line.
    Bytes that are not UTF-8 stay as lone surrogates: that prompt alone fails, as "not valid UTF-8"."""
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                text = str(json.loads(text)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f'{path}:{number}: expected a prompt or {{"prompt": ...}} ({exc})') from exc
        prompts.append(text)
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line)")
    return prompts


def prompt_folder(output: Path, index: int, prompt: str) -> Path:
    """OUTPUT/NNNN-first-words-of-the-prompt: stable across runs, readable, filesystem-safe."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48].rstrip("-") or "prompt"
    return output / f"{index:04d}-{slug}"


def finished(folder: Path, prompt: str, reward_model: str = "hpsv3") -> dict | None:
    """The report of a finished run of `prompt` judged by `reward_model` in `folder`, or None (reports written before
    the choice of reward model existed were judged by hpsv3)."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = report.get("prompt") == prompt and report.get("reward_model", "hpsv3") == reward_model
    return report if same else None
