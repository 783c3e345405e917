"""Run the OFFICIAL HPSv3 inferencer (PyPI hpsv3==1.0.0) on the tiny fixture and write golden outputs.

Runs only in a separate venv with the official stack (see `make golden`: transformers 4.45.2,
torch 2.14.1 + torchvision 0.29.1, trl 0.11.x, peft, rich; `hpsv3` installed --no-deps):

    .venv-official/bin/python tests/golden/make_golden.py --tiny build/tiny --out tests/golden/official_tiny.json

The official loader wants base weights to overwrite, so a throwaway copy of the tiny base gets
random Qwen2-VL weights; every one of them is then replaced by the checkpoint (strict load).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import hpsv3
import numpy as np
import PIL
import torch
import transformers
from hpsv3.dataset import data_collator_qwen
from hpsv3.inference import HPSv3RewardInferencer
from omegaconf import OmegaConf
from transformers import AutoConfig, Qwen2VLForConditionalGeneration

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "fixtures" / "images"
LONG_PROMPT = " ".join(
    ["A sweeping panoramic matte painting of a floating archipelago at golden hour, waterfalls spilling"
     " into clouds, tiny airships with patched canvas sails, intricate brass machinery, lush hanging"
     " gardens, volumetric god rays, ultra detailed, 8k, trending on artstation"] * 4
)  # fmt: skip
CASES = [
    ("square_512.png", "a cute chibi anime cartoon fox, smiling, wagging tail"),
    ("rgba_640x480.png", "a red balloon over a quiet lake"),
    ("gray_300.png", "一只可爱的猫坐在窗台上，阳光明媚"),
    ("photo_800x600.jpg", "sunset over mountains 🌄 with a 🐱 and a rainbow 🌈"),
    ("small_200.png", "line one\nline two\n\tindented with a tab\r\nand a CRLF"),
    ("wide_1920x1080.jpg", LONG_PROMPT),
    ("tall_300x900.png", ""),
    ("palette_400.png", "braces {text_prompt} and {0} stay literal; quotes ' \" and <b>html</b>"),
    ("cmyk_500x375.jpg", "a lighthouse at night, <|im_end|> inside the prompt"),
    ("square_512.png", "the same image with a different prompt: a blue whale"),
]


def official_base(tiny_base: Path, tmp: Path) -> Path:
    """Copy the tiny base and give it (random) weights, which the official loader insists on."""
    base = tmp / "base"
    shutil.copytree(tiny_base, base)
    model = Qwen2VLForConditionalGeneration(AutoConfig.from_pretrained(base))
    model.save_pretrained(base, safe_serialization=True)
    return base


def official_config(base: Path, tmp: Path) -> Path:
    """The official HPSv3_7B.yaml, pointed at the tiny base, in fp32 on CPU."""
    config = OmegaConf.load(Path(hpsv3.__file__).parent / "config" / "HPSv3_7B.yaml")
    overrides = dict(model_name_or_path=str(base), bf16=False, torch_dtype="float32", disable_flash_attn2=True,
                     gradient_checkpointing=False, report_to="none", dataloader_num_workers=0)  # fmt: skip
    for key, value in overrides.items():
        config[key] = value
    path = tmp / "HPSv3_tiny.yaml"
    OmegaConf.save(config, path)
    return path


def pixel_summary(pixel_values: torch.Tensor) -> dict:
    flat = pixel_values.double().flatten()
    return {"sum": flat.sum().item(), "abs_sum": flat.abs().sum().item(), "head": flat[:8].tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", type=Path, required=True, help="folder written by `hpsv3 make-tiny`")
    parser.add_argument("--out", type=Path, default=HERE / "official_tiny.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = official_base(args.tiny / "base", tmp)
        inferencer = HPSv3RewardInferencer(
            config_path=str(official_config(base, tmp)),
            checkpoint_path=str(args.tiny / "HPSv3-tiny.safetensors"),
            device="cpu",
        )
        paths = [str(IMAGES / name) for name, _ in CASES]
        prompts = [prompt for _, prompt in CASES]
        items = []
        with torch.no_grad():
            for (name, prompt), path in zip(CASES, paths, strict=True):
                batch = inferencer.prepare_batch([path], [prompt])
                mu, log_sigma = inferencer.model(return_dict=True, **batch)["logits"][0].tolist()
                items.append({
                    "image": name, "prompt": prompt, "mu": mu, "log_sigma": log_sigma,
                    "grid_thw": batch["image_grid_thw"][0].tolist(),
                    "num_tokens": int(batch["attention_mask"].sum()),
                    "input_ids": batch["input_ids"][0].tolist(),
                    "pixel_values": pixel_summary(batch["pixel_values"]),
                })  # fmt: skip
            batched = inferencer.reward(paths, prompts)
        for item, (mu, log_sigma) in zip(items, batched.tolist(), strict=True):
            item["mu_batch"], item["log_sigma_batch"] = mu, log_sigma
        rendered = inferencer.processor.apply_chat_template(
            [[{"role": "user", "content": [
                {"type": "image", "image": paths[0]},
                {"type": "text", "text": data_collator_qwen.INSTRUCTION.format(text_prompt=prompts[0])
                 + data_collator_qwen.prompt_with_special_token},
            ]}]], tokenize=False, add_generation_prompt=True,
        )[0]  # fmt: skip
    golden = {
        "made_by": "tests/golden/make_golden.py with the official hpsv3 inferencer (HPSv3RewardInferencer)",
        "versions": {"hpsv3": "1.0.0", "transformers": transformers.__version__, "torch": torch.__version__,
                     "pillow": PIL.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "dtype": "float32",
        "checkpoint": "hpsv3 make-tiny --seed 0",
        "checkpoint_sha256": hashlib.sha256((args.tiny / "HPSv3-tiny.safetensors").read_bytes()).hexdigest(),
        "instruction": data_collator_qwen.INSTRUCTION,
        "prompt_with_special_token": data_collator_qwen.prompt_with_special_token,
        "rendered_chat_first_item": rendered,
        "items": items,
    }  # fmt: skip
    args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(items)} items to {args.out}")


if __name__ == "__main__":
    main()
