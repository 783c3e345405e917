"""`hpsv3 export` / `python export/onnx.py`: vision encoder, language tower and reward head → ONNX.

Each stage is exported with torch.onnx (dynamo, opset 23: fused Attention / RMSNormalization /
RotaryEmbedding ops) from wrappers around the reference model's own modules, then verified stage
by stage and end to end against the PyTorch reference; the export fails when parity is off.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import transformers
from PIL import Image

from hpsv3_serve import engines
from hpsv3_serve.batching import PreparedItem, collate
from hpsv3_serve.checkpoint import BASE_FILES, DTYPES, load_model, source_digest, source_record
from hpsv3_serve.engines.onnx_engine import (
    BASE_DIR,
    EMBED_FILE,
    FORMAT_VERSION,
    HEAD_FILE,
    LANGUAGE_FILE,
    MANIFEST_FILE,
    VISION_FILE,
)
from hpsv3_serve.errors import HPSv3Error
from hpsv3_serve.files import write_text_atomic
from hpsv3_serve.inputs import PATCH_BYTES, prepare_image, vision_position_ids
from hpsv3_serve.model import HPSv3RewardModel
from hpsv3_serve.prompt import PromptTokenizer

from .modules import LanguageTower, RewardHead, VisionEncoder

OPSET = 23
ONNX_DTYPES = ("float32", "float16")  # bf16 and fp8 are chosen when TensorRT engines are built (GPU)
DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 5e-2}


class ExportParityError(HPSv3Error):
    """An exported stage disagrees with the PyTorch reference beyond the tolerance."""

    code = "export_parity"


def _export(module: torch.nn.Module, args: tuple, names: list[str], outputs: list[str], dims: dict, path: Path):
    program = torch.onnx.export(
        module,
        args,
        dynamic_shapes={name: dims.get(name, {}) for name in names},
        input_names=names,
        output_names=outputs,
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    # weights in `<graph>.onnx.data`: the 7B vision encoder (2.7 GB in fp32) and tower pass protobuf's 2 GB limit
    program.save(str(path), external_data=path.name != HEAD_FILE)


def export_stages(model: HPSv3RewardModel, out: Path) -> None:
    """Write the three ONNX graphs and the embedding table into `out`."""
    hidden = model.config.text_config.hidden_size
    dtype = model.dtype
    patches = torch.export.Dim("patches", min=16, max=16384)
    batch = torch.export.Dim("batch", min=1, max=1024)
    length = torch.export.Dim("length", min=2, max=32768)
    grid = (1, 16, 16)
    pixels = torch.zeros(1, grid[1] * grid[2], PATCH_BYTES, dtype=torch.uint8)
    positions = torch.from_numpy(vision_position_ids(grid))[None]
    _export(VisionEncoder(model), (pixels, positions), ["patches", "position_ids"], ["image_embeds"],
            {"patches": {1: patches}, "position_ids": {1: patches}}, out / VISION_FILE)  # fmt: skip
    embeds = torch.zeros(2, 8, hidden, dtype=dtype)
    sequence_dims = {0: batch, 1: length}
    _export(
        LanguageTower(model),
        (embeds, torch.arange(8).expand(2, 8).clone(), torch.ones(2, 8, dtype=torch.int64), torch.tensor([7, 7])),
        ["inputs_embeds", "position_ids", "attention_mask", "reward_index"],
        ["hidden"],
        {"inputs_embeds": sequence_dims, "position_ids": sequence_dims, "attention_mask": sequence_dims,
         "reward_index": {0: batch}},
        out / LANGUAGE_FILE,
    )  # fmt: skip
    _export(RewardHead(model), (torch.zeros(2, hidden),), ["hidden"], ["mu", "sigma"], {"hidden": {0: batch}},
            out / HEAD_FILE)  # fmt: skip
    np.save(
        out / EMBED_FILE, model.language_model.embed_tokens.weight.detach().float().numpy().astype(dtype_name(dtype))
    )


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def verification_items(tokenizer: PromptTokenizer) -> list[PreparedItem]:
    """Three synthetic images (square, wide, tall) with different prompts: shapes smart_resize produces."""
    items = []
    for (width, height), prompt in [((512, 512), "a red fox"), ((1920, 1080), "一座桥 🌉\tat dusk"), ((300, 900), "")]:
        ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
        image = prepare_image(Image.fromarray(ramp.astype(np.uint8)[..., ::-1].copy(), "RGB"))
        items.append(PreparedItem(tokenizer.encode_one(prompt, image.num_tokens), image))
    return items


def verify(model: HPSv3RewardModel, tokenizer: PromptTokenizer, out: Path, tolerance: float) -> dict:
    """Max abs differences per stage and end to end, ONNX Runtime vs the PyTorch reference."""
    items = verification_items(tokenizer)
    onnx_engine, torch_engine = engines.load("onnx", folder=out), engines.load("torch", model=model)
    report: dict[str, float] = {"vision_encoder": 0.0, "language_model": 0.0, "reward_head": 0.0}
    with torch.inference_mode():
        for item in items:
            grid = torch.tensor([item.image.grid_thw])
            reference = model.encode_images(torch.from_numpy(item.image.pixel_values), grid).float().numpy()
            onnx_embeds = onnx_engine.vision(item.image.patches, item.image.grid_thw)
            report["vision_encoder"] = max(report["vision_encoder"], float(np.abs(onnx_embeds - reference).max()))
        batch = collate(items)
        ids = torch.from_numpy(batch.input_ids)
        pixels = torch.from_numpy(batch.pixel_values)
        embeds = model.embed(ids, model.encode_images(pixels, torch.from_numpy(batch.image_grid_thw)))
        mask = torch.from_numpy(batch.attention_mask)
        hidden_ref = model.reward_hidden(embeds, mask, torch.from_numpy(batch.reward_index)).float().numpy()
        sequences = [embeds[row, : batch.reward_index[row] + 1].float().numpy() for row in range(len(batch))]
        hidden_onnx = onnx_engine.language(sequences)
        report["language_model"] = float(np.abs(hidden_onnx - hidden_ref).max())
        mu_ref, sigma_ref = (t.numpy() for t in RewardHead(model)(torch.from_numpy(hidden_ref)))
        mu_onnx, sigma_onnx = onnx_engine.head(hidden_ref)
        report["reward_head"] = float(max(np.abs(mu_onnx - mu_ref).max(), np.abs(sigma_onnx - sigma_ref).max()))
    chain = np.abs(onnx_engine.score(batch) - torch_engine.score(batch))
    report["chain_mu"], report["chain_log_sigma"] = float(chain[:, 0].max()), float(chain[:, 1].max())
    report["tolerance"] = tolerance
    failed = [name for name in ("chain_mu", "chain_log_sigma", "reward_head") if report[name] > tolerance]
    if failed:
        raise ExportParityError(f"ONNX parity off for {failed}: {json.dumps(report)}; artifacts kept in {out}")
    return report


def export_onnx(
    checkpoint: Path, base: Path, out: Path, dtype: str = "float32", tolerance: float | None = None
) -> dict:
    """Export, copy the base config/tokenizer, verify, and write manifest.json (written last)."""
    if dtype not in ONNX_DTYPES:
        raise HPSv3Error(f"ONNX dtype must be one of {ONNX_DTYPES}; bf16/fp8 are TensorRT build options")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    model = load_model(checkpoint, base, DTYPES[dtype])
    export_stages(model, out)
    (out / BASE_DIR).mkdir(exist_ok=True)
    for name in BASE_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, out / BASE_DIR / name)
    manifest = {
        "format": FORMAT_VERSION,
        "source_sha256": source_digest(checkpoint, base),
        "checkpoint": source_record(checkpoint),
        "base": source_record(base),
        "dtype": dtype,
        "numpy_dtype": dtype,
        "opset": OPSET,
        "hidden_size": model.config.text_config.hidden_size,
        "files": [VISION_FILE, LANGUAGE_FILE, HEAD_FILE, EMBED_FILE, BASE_DIR],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
    }  # fmt: skip
    # Provisional (no "parity" yet): verification loads the export through it; removed if verification fails.
    write_text_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    try:
        manifest["parity"] = verify(model, PromptTokenizer.from_base(base), out, tolerance or DEFAULT_TOLERANCE[dtype])
    except BaseException:  # parity off, or Ctrl-C while verifying: an unverified export must not look complete
        (out / MANIFEST_FILE).unlink()
        raise
    manifest["export_seconds"] = round(time.perf_counter() - started, 1)
    write_text_atomic(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest
