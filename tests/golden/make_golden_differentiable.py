"""Golden outputs of the OFFICIAL differentiable preprocessing + model (PyPI hpsv3==1.0.0) on the tiny fixture.

Runs in the official venv, as make_golden.py does (`make golden`):

    .venv-official/bin/python tests/golden/make_golden_differentiable.py --tiny build/tiny \
        --out tests/golden/official_tiny_differentiable.json

Per case: the fixture image as float32 [3, H, W] in [0, 1] (uint8 / 255), multiplied by 255 (no rounding) into the
official `Qwen2VLImageProcessor.preprocess_tensor` built with min_pixels = max_pixels = 200704 (the inference
budget; the class's own defaults are 56·56 and 28·28·1280), one image per call (the official stacks a batch into
the temporal axis), then the official reward model with gradients. Token ids come from the official
`prepare_batch` on the same image (its grid must equal the tensor path's). Recorded: mu, log_sigma, the
tensor path's pixel_values summary, d(mu)/d(pixels) with respect to the [0, 1] input at fixed indices (corners,
centre, seeded picks, the largest |gradient|), its L2 norm and sum, and the official PIL-path mu for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from hpsv3.inference import HPSv3RewardInferencer
from hpsv3.model.differentiable_image_processor import Qwen2VLImageProcessor
from make_golden import IMAGES, official_base, official_config, pixel_summary
from PIL import Image

HERE = Path(__file__).resolve().parent
PIXELS = 256 * 28 * 28  # the official inference budget: min_pixels = max_pixels
RANDOM_INDICES = 5
CASES = [
    ("square_512.png", "a cute chibi anime cartoon fox, smiling, wagging tail"),
    ("photo_800x600.jpg", "sunset over mountains 🌄 with a 🐱 and a rainbow 🌈"),
    ("small_200.png", "a red balloon over a quiet lake"),
    ("tall_300x900.png", ""),
    ("wide_1920x1080.jpg", "一只可爱的猫坐在窗台上，阳光明媚"),
    ("gray_300.png", "a lighthouse at night"),
]


def unit_pixels(name: str) -> torch.Tensor:
    """The fixture as float32 [3, H, W] in [0, 1]: what a decoder hands to a reward (uint8 / 255)."""
    array = np.asarray(Image.open(IMAGES / name).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def gradient_indices(grad: torch.Tensor, seed: int) -> list[list[int]]:
    """[c, y, x] of the corners, the centre, seeded picks and the largest |gradient|."""
    _, height, width = grad.shape
    rng = np.random.default_rng(seed)
    picks = [[int(rng.integers(3)), int(rng.integers(height)), int(rng.integers(width))] for _ in range(RANDOM_INDICES)]
    largest = [int(i) for i in np.unravel_index(int(grad.abs().argmax()), grad.shape)]
    return [[0, 0, 0], [1, height // 2, width // 2], [2, height - 1, width - 1], *picks, largest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", type=Path, required=True, help="folder written by `hpsv3 make-tiny`")
    parser.add_argument("--out", type=Path, default=HERE / "official_tiny_differentiable.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    processor = Qwen2VLImageProcessor(min_pixels=PIXELS, max_pixels=PIXELS)
    items = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        inferencer = HPSv3RewardInferencer(
            config_path=str(official_config(official_base(args.tiny / "base", tmp), tmp)),
            checkpoint_path=str(args.tiny / "HPSv3-tiny.safetensors"),
            device="cpu",
            differentiable=True,
        )
        for seed, (name, prompt) in enumerate(CASES):
            batch = inferencer.prepare_batch([str(IMAGES / name)], [prompt])
            with torch.no_grad():
                mu_pil = inferencer.model(return_dict=True, **batch)["logits"][0, 0].item()
            pixels = unit_pixels(name).requires_grad_(True)
            processed = processor.preprocess_tensor(pixels * 255)
            grid = processed["image_grid_thw"].view(1, 3)
            assert grid.tolist() == batch["image_grid_thw"].tolist(), f"{name}: tensor grid != PIL grid"
            inputs = {**batch, "pixel_values": processed["pixel_values"], "image_grid_thw": grid}
            mu, log_sigma = inferencer.model(return_dict=True, **inputs)["logits"][0]
            (grad,) = torch.autograd.grad(mu, pixels)
            indices = gradient_indices(grad, seed)
            items.append({
                "image": name, "prompt": prompt, "size_hw": list(pixels.shape[1:]), "grid_thw": grid[0].tolist(),
                "mu": mu.item(), "log_sigma": log_sigma.item(), "mu_pil": mu_pil,
                "pixel_values": pixel_summary(processed["pixel_values"].detach()),
                "grad_mu": {"indices": indices, "values": [grad[c, y, x].item() for c, y, x in indices],
                            "l2": grad.double().norm().item(), "sum": grad.double().sum().item()},
            })  # fmt: skip
            print(f"{name}: mu {mu.item():.6f} (PIL path {mu_pil:.6f}), |grad| {grad.norm().item():.4e}")
    golden = {
        "made_by": "tests/golden/make_golden_differentiable.py: official Qwen2VLImageProcessor.preprocess_tensor "
        "(min = max = 200704 pixels) + the official reward model (HPSv3RewardInferencer(differentiable=True))",
        "versions": {"hpsv3": metadata.version("hpsv3"),
                     "transformers": transformers.__version__, "torch": torch.__version__,
                     "pillow": PIL.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "dtype": "float32",
        "input": "float32 [3, H, W] = uint8 / 255; the official receives it times 255; gradients are d(mu)/d(input)",
        "checkpoint": "hpsv3 make-tiny --seed 0",
        "checkpoint_sha256": hashlib.sha256((args.tiny / "HPSv3-tiny.safetensors").read_bytes()).hexdigest(),
        "items": items,
    }  # fmt: skip
    args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(items)} items to {args.out}")


if __name__ == "__main__":
    main()
