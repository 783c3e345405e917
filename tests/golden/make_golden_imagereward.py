"""Run image-reward 1.5's OFFICIAL `ImageReward.load` + `score` on the tiny ImageReward and write golden outputs.

Runs only in its golden venv (`make golden-imagereward`: `.venv-imagereward`, the official venv's packages plus
image-reward 1.5 and its pins timm 0.6.13 / fairscale 0.4.13, openai-clip and ftfy, all `--no-deps`):

    .venv-imagereward/bin/python tests/golden/make_golden_imagereward.py --tiny build/tiny-judges

The official code hard-codes the full sizes (ViT-L/16: `create_vit("large")`; `MLP(768)`); only those two sizes are
patched, to the tiny model's, with the official classes (timm-style `VisionTransformer`, `MLP`). Everything else is the
official path: `ImageReward.load(path, med_config=...)` (`torch.load` of a .pt and `load_state_dict(strict=False)`,
checked here to have matched every key), BLIP's `init_tokenizer` (`BertTokenizer.from_pretrained("bert-base-uncased")`,
served from an offline hub cache holding the tiny vocab), `model.score(prompt, image_path)` one pair per call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
import torch
from judge_cases import CASES
from PIL import Image

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "fixtures" / "images"
EXTRA = [("square_512.png", "[ENC] a fox [DEC] and [SEP] [PAD] inside a prompt")]  # BLIP's added tokens, as text
WEIGHT_FILES = ["imagereward/ImageReward.safetensors", "imagereward/med_config.json", "bert/vocab.txt"]


def offline_bert(tiny: Path, hub: Path) -> None:
    """A hub cache holding the tiny vocab as `bert-base-uncased`, and transformers told to stay offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--bert-base-uncased"
    (repo / "snapshots" / commit).mkdir(parents=True)
    for name in ("vocab.txt", "tokenizer_config.json"):
        (repo / "snapshots" / commit / name).write_bytes((tiny / "bert" / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    os.environ.update(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def tiny_sizes(state: dict[str, torch.Tensor]) -> None:
    """Patch the two hard-coded sizes (ViT-L, MLP(768)) to the tiny checkpoint's, with the official classes."""
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP.vit import VisionTransformer

    module = sys.modules["ImageReward.ImageReward"]
    width = state["blip.visual_encoder.cls_token"].shape[-1]
    depth = len({key.split(".")[3] for key in state if key.startswith("blip.visual_encoder.blocks.")})
    text_width = state["mlp.layers.0.weight"].shape[1]

    def create_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        assert vit == "large" and image_size == 224
        encoder = VisionTransformer(img_size=image_size, patch_size=16, embed_dim=width, depth=depth,
                                    num_heads=width // 64, use_grad_checkpointing=use_grad_checkpointing,
                                    ckpt_layer=ckpt_layer, drop_path_rate=0.1)  # fmt: skip  # as create_vit
        return encoder, width

    official_mlp = module.MLP
    blip_pretrain.create_vit = create_vit
    module.MLP = lambda input_size: official_mlp(text_width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", type=Path, required=True, help="written by `python -m hpsv3_serve.judges.tiny`")
    parser.add_argument("--out", type=Path, default=HERE / "official_imagereward_tiny.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        offline_bert(args.tiny, tmp / "hub")
        from safetensors.torch import load_file

        state = load_file(str(args.tiny / "imagereward" / "ImageReward.safetensors"))
        checkpoint = tmp / "ImageReward.pt"  # a plain state dict, as THUDM/ImageReward's
        torch.save(state, checkpoint)
        tiny_sizes(state)
        import ImageReward as RM
        import transformers

        model = RM.load(str(checkpoint), device="cpu", med_config=str(args.tiny / "imagereward" / "med_config.json"))
        loaded = model.state_dict()
        assert set(loaded) == set(state), set(loaded) ^ set(state)  # strict=False must have matched every key
        assert all(torch.equal(loaded[key], value) for key, value in state.items())
        items = []
        for name, prompt in CASES + EXTRA:
            with torch.no_grad():
                score = model.score(prompt, str(IMAGES / name))
            ids = model.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35)["input_ids"]
            pixels = model.preprocess(Image.open(IMAGES / name)).double()
            items.append({"image": name, "prompt": prompt, "score": score, "input_ids": ids,
                          "pixel_sum": pixels.sum().item()})  # fmt: skip
    golden = {
        "made_by": "tests/golden/make_golden_imagereward.py: image-reward 1.5, ImageReward.load + score",
        "versions": {"image-reward": "1.5", "timm": "0.6.13", "transformers": transformers.__version__,
                     "torch": torch.__version__, "pillow": PIL.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "dtype": "float32",
        "tiny": "python -m hpsv3_serve.judges.tiny",
        "sha256": {name: hashlib.sha256((args.tiny / name).read_bytes()).hexdigest() for name in WEIGHT_FILES},
        "judges": {"imagereward": items},
    }  # fmt: skip
    args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(items)} items to {args.out}")


if __name__ == "__main__":
    main()
