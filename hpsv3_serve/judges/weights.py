"""Where a judge's weights come from: a hub id (downloaded, safetensors only) or a local folder / file.

The project's checkpoint rule holds here too (`checkpoint.require_safetensors`): pickle weights (.bin, .pth) are
never unpickled; the error gives the one command that converts a trusted file to safetensors.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..checkpoint import (
    PICKLE_SUFFIXES,
    TO_SAFETENSORS,
    _from_hub,
    _hub_error,
    _local_only,
    _looks_like_hub_id,
    require_safetensors,
)
from ..errors import ModelLoadError

CLIP_FILES = [
    "config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
]  # fmt: skip


def resolve_folder(
    spec: str,
    revision: str | None = None,
    required: str = "config.json",
    what: str = "a transformers model folder",
    patterns: list[str] = CLIP_FILES,
) -> Path:
    """A local folder holding `required`, or a hub id's snapshot of `patterns`."""
    path = Path(spec).expanduser()
    if path.exists():
        _local_only(spec, revision)
        if not (path / required).is_file():
            raise ModelLoadError(f"{path}: no {required}; expected {what}")
        return path
    if _looks_like_hub_id(spec):
        from huggingface_hub import snapshot_download

        try:
            return _from_hub(spec, revision, snapshot_download(spec, revision=revision, allow_patterns=patterns))
        except Exception as exc:  # offline, missing repo or revision, auth: all end the same way for the user
            raise _hub_error(spec, revision, ", ".join(patterns), exc) from exc
    raise ModelLoadError(f"{spec!r} not found: pass {what} or a hub id")


def require_safetensors_folder(folder: Path) -> None:
    """Refuse a model folder without safetensors weights (pickle `pytorch_model.bin` is never loaded)."""
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    source = folder / pickles[0] if pickles else "pytorch_model.bin"
    found = f"It has {', '.join(pickles)}" if pickles else "If the repository publishes only pytorch_model.bin"
    raise ModelLoadError(
        f"{folder}: no model.safetensors. {found}: pickle weights are not loaded, since unpickling can run code. "
        f'If you trust the file, convert it once (torch>=2.6): python -c "{TO_SAFETENSORS}" {source} '
        f"{folder / 'model.safetensors'}, beside its config.json"
    )


def refuse_pickle(path: Path, recipe: str) -> None:
    """`checkpoint.require_safetensors` with the conversion `recipe` that fits this file's layout."""
    if path.suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{path}: pickle checkpoints ({', '.join(PICKLE_SUFFIXES)}) are not loaded, since unpickling can run "
            f'code. If you trust the file, convert it once (torch>=2.6): python -c "{recipe}" '
            f"{shlex.quote(str(path))} {shlex.quote(str(path.with_suffix('.safetensors')))}"
        )
    require_safetensors(path)


def resolve_file(
    spec: str, revision: str | None = None, filename: str = "model.safetensors", recipe: str = TO_SAFETENSORS
) -> Path:
    """A local .safetensors file, or `filename` from a hub repo (a pickle there is downloaded, then refused with the
    `recipe` that converts it)."""
    path = Path(spec).expanduser()
    if path.exists():
        _local_only(spec, revision)
        if not path.is_file():
            raise ModelLoadError(f"{path}: expected a .safetensors file")
        refuse_pickle(path, recipe)
        return path
    if _looks_like_hub_id(spec):
        from huggingface_hub import hf_hub_download

        try:
            path = _from_hub(spec, revision, hf_hub_download(spec, filename, revision=revision))
        except Exception as exc:
            raise _hub_error(spec, revision, filename, exc) from exc
        refuse_pickle(path, recipe)
        return path
    raise ModelLoadError(f"{spec!r} not found: pass a .safetensors file or a hub id")
