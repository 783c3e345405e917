"""`hpsv3 export --vllm OUT`: a model folder that stock vLLM serves with the official HPSv3 scores.

    OUT/config.json            the base Qwen2-VL config, vocab_size = checkpoint rows (151658) and no
                               `mrope_section`: vLLM then gives every token the plain 1-D position
                               0..L-1, exactly what the official forward does (FACTS: Positions)
    OUT/model.safetensors      vision tower + language tower in the official flat key names
    OUT/tokenizer files        the base tokenizer with `<|Reward|>` added as id 151657 (requests carry
                               token ids ending at it: `hpsv3_serve.engines.vllm_engine`)
    OUT/chat_template.jinja    HPSv3's prompt for one [image, text] user message, ending at <|Reward|>
                               (`hpsv3_serve.prompt.chat_template`): chat requests to `vllm serve`
                               tokenise exactly like ours
    OUT/preprocessor_config.json
                               min_pixels = max_pixels = 200704: images are resized to the official size
    OUT/modules.json, 1_Pooling/, 2_Dense/ … 4_Dense/
                               sentence-transformers head: LAST-token pooling, then rm_head's three
                               Linear layers (ReLU, ReLU, identity) in float32, so `LLM.embed` and
                               `vllm serve … /pooling` return [mu, log_sigma]
    OUT/tower/                 the same folder without the head (links): pooling returns the final-norm
                               hidden state at <|Reward|>, for the Triton GPU target's TensorRT reward_head
    OUT/hpsv3_vllm.json        source content hash, what was written

No vLLM import here: the folder is written with safetensors alone, on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hpsv3_serve.checkpoint import (
    cached_digest,
    require_safetensors,
    source_digest,
    source_record,
    to_official_key,
    to_our_key,
)
from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.inputs import PIXELS
from hpsv3_serve.prompt import PromptTokenizer, chat_template

WEIGHTS_FILE = "model.safetensors"
MANIFEST = "hpsv3_vllm.json"
TOWER_DIR = "tower"
HEAD_LAYERS = (("0", "torch.nn.modules.activation.ReLU"), ("3", "torch.nn.modules.activation.ReLU"),
               ("5", "torch.nn.modules.linear.Identity"))  # fmt: skip
FORMAT_VERSION = 2
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def one_d_positions(config: dict) -> dict:
    """The config without `mrope_section` (top level and text_config; legacy and transformers-5 keys)."""
    config = json.loads(json.dumps(config))
    for section in (config, config.get("text_config") or {}):
        section.pop("rope_scaling", None)
        rope = section.get("rope_parameters")
        if isinstance(rope, dict):
            for key in ("mrope_section", "mrope_interleaved", "type"):
                rope.pop(key, None)
            if rope.get("rope_type", "mrope") == "mrope":
                rope["rope_type"] = "default"
            section.setdefault("rope_theta", rope.get("rope_theta"))
    return config


def _checkpoint_tensors(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(tower tensors in official flat names, rm_head tensors in float32) from an official/transformers-5 file."""
    require_safetensors(checkpoint)
    tower, head = {}, {}
    with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
        for key in handle.keys():  # noqa: SIM118
            ours = to_our_key(key)
            if key.startswith("lm_head."):
                tower[key] = handle.get_tensor(key)
            elif ours is not None and ours.startswith("rm_head."):
                head[ours] = handle.get_tensor(key).float()
            elif ours is not None:
                tower[to_official_key(ours)] = handle.get_tensor(key)
    if "model.embed_tokens.weight" not in tower or len(head) != 6:
        raise ModelLoadError(f"{checkpoint}: not an HPSv3 checkpoint (needs model.embed_tokens and rm_head.{{0,3,5}})")
    return tower, head


def _write_head(head: dict[str, torch.Tensor], hidden: int, out: Path) -> None:
    """sentence-transformers modules: last-token pooling + rm_head as three Dense layers (fp32)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (out / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": hidden, "pooling_mode_lasttoken": True}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    for idx, (layer, activation) in enumerate(HEAD_LAYERS, start=2):
        weight, bias = head[f"rm_head.{layer}.weight"], head[f"rm_head.{layer}.bias"]
        folder = out / f"{idx}_Dense"
        folder.mkdir()
        dense = {"in_features": weight.shape[1], "out_features": weight.shape[0], "bias": True,
                 "activation_function": activation}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(dense, indent=2))
        save_file({"linear.weight": weight.contiguous(), "linear.bias": bias.contiguous()}, str(folder / WEIGHTS_FILE))
        modules.append(
            {"idx": idx, "name": str(idx), "path": folder.name, "type": "sentence_transformers.models.Dense"}
        )
    (out / "modules.json").write_text(json.dumps(modules, indent=2))


def _write_text_and_image_files(base: Path, out: Path) -> list[str]:
    """Tokenizer (with `<|Reward|>`), HPSv3 chat template, official image size; returns the names written."""
    PromptTokenizer.from_base(base).tokenizer.save(str(out / "tokenizer.json"))  # with <|Reward|> = 151657
    (out / CHAT_TEMPLATE_FILE).write_text(chat_template(), encoding="utf-8")
    written = ["tokenizer.json", CHAT_TEMPLATE_FILE]
    for name in ("tokenizer_config.json", "preprocessor_config.json", "generation_config.json"):
        if not (base / name).is_file():
            continue
        settings = json.loads((base / name).read_text(encoding="utf-8"))
        settings.pop("chat_template", None)  # the Qwen2-VL chat template would add the base's tail
        if name == "preprocessor_config.json":
            settings.update(min_pixels=PIXELS, max_pixels=PIXELS)
            if isinstance(settings.get("size"), dict):
                settings["size"].update(shortest_edge=PIXELS, longest_edge=PIXELS)
        (out / name).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(name)
    return written


def _write_tower_view(out: Path, shared: list[str]) -> None:
    """OUT/tower: relative links to the tower files, no head modules."""
    view = out / TOWER_DIR
    view.mkdir()
    for name in shared:
        os.symlink(Path("..") / name, view / name)


def export_vllm(checkpoint: Path, base: Path, out: Path) -> dict:
    """Write the vLLM folder (replaced as a whole; the manifest is written last). Returns the manifest."""
    started = time.perf_counter()
    tower, head = _checkpoint_tensors(checkpoint)
    rows = tower["model.embed_tokens.weight"].shape[0]
    config = one_d_positions(json.loads((base / "config.json").read_text(encoding="utf-8")))
    config["vocab_size"] = rows  # the checkpoint's 151658 rows, not the base's 152064
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["vocab_size"] = rows
    hidden = head["rm_head.0.weight"].shape[1]
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({key: value.contiguous() for key, value in tower.items()}, str(staging / WEIGHTS_FILE), {"format": "pt"})
    shared = ["config.json", WEIGHTS_FILE, *_write_text_and_image_files(base, staging)]
    _write_head(head, hidden, staging)
    _write_tower_view(staging, shared)
    manifest = {
        "format": FORMAT_VERSION,
        "source_sha256": source_digest(checkpoint, base),
        "checkpoint": source_record(checkpoint),
        "base": source_record(base),
        "vocab_rows": rows,
        "hidden_size": hidden,
        "positions": "1-D: config.json has no mrope_section, so vLLM uses plain RoPE over 0..L-1",
        "chat": f"{CHAT_TEMPLATE_FILE}: one [image, text] user message rendered as HPSv3's prompt",
        "head": "modules.json: LAST pooling + rm_head (fp32) -> [mu, log_sigma]; tower/ has no head",
        "export_seconds": round(time.perf_counter() - started, 1),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return manifest


def current_vllm_export(folder: Path) -> dict:
    """The manifest of a complete vLLM export in this version's format, else {}."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if manifest.get("format") == FORMAT_VERSION else {}


def ensure_vllm_folder(checkpoint: Path, base: Path, workdir: Path, say: Callable[[str], None] = print) -> Path:
    """The vLLM folder for this checkpoint under `workdir/vllm`, exported when missing or stale."""
    workdir.mkdir(parents=True, exist_ok=True)
    folder = workdir / "vllm"
    if current_vllm_export(folder).get("source_sha256") == cached_digest(checkpoint, base, workdir):
        return folder
    say(f"exporting the vLLM model folder to {folder} ...")
    export_vllm(checkpoint, base, folder)
    return folder
