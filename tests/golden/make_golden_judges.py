"""Run each judge's OFFICIAL code path on the tiny judges and write golden outputs.

Runs only in the golden venv (`make golden-judges`: `.venv-official` plus openai-clip 1.0.1, open_clip_torch 3.3.0,
ftfy, setuptools<81 for `pkg_resources`), never beside the project:

    .venv-official/bin/python tests/golden/make_golden_judges.py --tiny build/tiny-judges

- PickScore: the README's `calc_probs` recipe on transformers 4.45 (`AutoProcessor` + `AutoModel`), images
  opened with `Image.open` as the README does, scores `logit_scale.exp() * cosine` before its softmax.
- CLIP ViT-H/14: open_clip (`create_model_and_transforms`, `get_tokenizer`, `encode_image` / `encode_text`,
  normalised, cosine), the way HPSv2's evaluation scores CLIP; the tiny weights in open_clip's layout under a
  tiny model config registered with `open_clip.add_model_config`.
- HPSv2: `hpsv2.img_score.score`'s steps (hpsv2 1.2.0 and the open_clip it bundles): `create_model_and_transforms`
  with its arguments, `load_state_dict(checkpoint['state_dict'])` of a `torch.save`d checkpoint as HPS_v2_compressed.pt
  is, `preprocess_val`, `get_tokenizer`, `model(image, text)`, `image_features @ text_features.T`; on a tiny model
  config registered with its `add_model_config` and `pretrained=None` (the laion weights it would fetch first are all
  replaced by the checkpoint). The hpsv2 wheel lacks `bpe_simple_vocab_16e6.txt.gz`; `make golden-judges` copies
  open_clip's (the same file, sha256 924691ac…) beside its tokenizer. RGBA inputs are left out: hpsv2 keeps 4 channels
  and its 3-channel patch embedding fails on them.
- Aesthetic v2: improved-aesthetic-predictor's `simple_inference.py` (its MLP class and `normalized` copied below,
  since the repository is a script, not a package), on OpenAI's `clip.load` (openai-clip), the tiny ViT-L/14 given
  as a TorchScript archive in OpenAI's layout, as ViT-L-14.pt is (openai-clip 1.0.1 cannot read a plain state-dict
  file on torch>=2.6: the failed `torch.jit.load` leaves the file at its end). CPU float32 (the script casts to
  `torch.cuda.FloatTensor`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import clip
import numpy as np
import open_clip
import PIL
import torch
import transformers
from judge_cases import CASES
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoProcessor

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "fixtures" / "images"
WEIGHT_FILES = ["clip-h/model.safetensors", "pickscore/model.safetensors", "clip-l/model.safetensors",
                "aesthetic-mlp.safetensors", "hpsv2.safetensors", "clip-h/tokenizer.json"]  # fmt: skip


def openai_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict in OpenAI's (and open_clip's) CLIP layout."""
    out = {
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.proj": hf["visual_projection.weight"].T,
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "text_projection": hf["text_projection.weight"].T,
        "logit_scale": hf["logit_scale"],
    }
    norms = (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
             ("ln_final", "text_model.final_layer_norm"))  # fmt: skip
    block = (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))  # fmt: skip
    for ours, theirs in norms:
        for part in ("weight", "bias"):
            out[f"{ours}.{part}"] = hf[f"{theirs}.{part}"]
    for tower, prefix in (("vision_model", "visual."), ("text_model", "")):
        index = 0
        while f"{tower}.encoder.layers.{index}.layer_norm1.weight" in hf:
            src, dst = f"{tower}.encoder.layers.{index}.", f"{prefix}transformer.resblocks.{index}."
            for part in ("weight", "bias"):
                qkv = [hf[f"{src}self_attn.{p}_proj.{part}"] for p in "qkv"]
                out[f"{dst}attn.in_proj_{part}"] = torch.cat(qkv)
                for ours, theirs in block:
                    out[f"{dst}{ours}.{part}"] = hf[f"{src}{theirs}.{part}"]
            index += 1
    return {key: value.contiguous() for key, value in out.items()}


class MLP(nn.Module):
    """improved-aesthetic-predictor's MLP (a LightningModule there; only its layers matter for inference)."""

    def __init__(self, input_size):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            # nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            # nn.ReLU(),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def normalized(a, axis=-1, order=2):
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def strict(model_and_info):
    model, info = model_and_info
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    return model.eval()


def pickscore(tiny: Path) -> list[dict]:
    """The PickScore README recipe, one prompt and one image per call."""
    processor = AutoProcessor.from_pretrained(tiny / "clip-h")
    model = strict(AutoModel.from_pretrained(tiny / "pickscore", output_loading_info=True))
    items = []
    for name, prompt in CASES:
        images = [Image.open(IMAGES / name)]
        image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
        pixels = image_inputs["pixel_values"].double()
        items.append({"image": name, "prompt": prompt, "score": scores[0].item(),
                      "input_ids": text_inputs["input_ids"][0].tolist(),
                      "pixel_sum": pixels.sum().item(), "pixel_abs_sum": pixels.abs().sum().item()})  # fmt: skip
    return items


def clip_h(tiny: Path, tmp: Path) -> list[dict]:
    """open_clip's zero-shot cosine, on a tiny open_clip config shaped like the tiny CLIPModel."""
    open_clip.add_model_config(tiny_open_clip_config(tiny, tmp))
    weights = tmp / "open_clip_tiny.safetensors"
    save_file(openai_state_dict(load_file(str(tiny / "clip-h" / "model.safetensors"))), str(weights))
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-tiny-14", pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer("ViT-tiny-14")
    model.eval()
    items = []
    for name, prompt in CASES:
        image = preprocess(Image.open(IMAGES / name)).unsqueeze(0)
        tokens = tokenizer([prompt])
        with torch.no_grad():
            image_features = model.encode_image(image)
            text_features = model.encode_text(tokens)
            image_features /= image_features.norm(dim=-1, keepdim=True)
            text_features /= text_features.norm(dim=-1, keepdim=True)
            cosine = (image_features @ text_features.T)[0, 0]
        ids = [token for token in tokens[0].tolist() if token]  # open_clip pads with 0
        items.append({"image": name, "prompt": prompt, "score": cosine.item(), "input_ids": ids,
                      "pixel_sum": image.double().sum().item()})  # fmt: skip
    return items


def tiny_open_clip_config(tiny: Path, tmp: Path) -> Path:
    """An open_clip model config shaped like the tiny CLIPModel `clip-h` (registered by each open_clip)."""
    config = json.loads((tiny / "clip-h" / "config.json").read_text())
    vision, text = config["vision_config"], config["text_config"]
    model_cfg = {
        "embed_dim": config["projection_dim"],
        "vision_cfg": {"image_size": vision["image_size"], "layers": vision["num_hidden_layers"],
                       "width": vision["hidden_size"], "patch_size": vision["patch_size"],
                       "head_width": vision["hidden_size"] // vision["num_attention_heads"]},
        "text_cfg": {"context_length": 77, "vocab_size": text["vocab_size"], "width": text["hidden_size"],
                     "heads": text["num_attention_heads"], "layers": text["num_hidden_layers"]},
    }  # fmt: skip
    path = tmp / "ViT-tiny-14.json"
    path.write_text(json.dumps(model_cfg))
    return path


def hpsv2(tiny: Path, tmp: Path) -> list[dict]:
    """hpsv2.img_score.score, one image per call, on the tiny checkpoint."""
    from hpsv2.src import open_clip as hps_open_clip

    hps_open_clip.add_model_config(tiny_open_clip_config(tiny, tmp))
    cp = tmp / "HPS_v2_tiny.pt"
    torch.save({"state_dict": load_file(str(tiny / "hpsv2.safetensors"))}, cp)
    model, _, preprocess_val = hps_open_clip.create_model_and_transforms(
        "ViT-tiny-14", None, precision="amp", device="cpu", jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False,
    )  # fmt: skip
    checkpoint = torch.load(cp, map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"])
    tokenizer = hps_open_clip.get_tokenizer("ViT-tiny-14")
    model.eval()
    items = []
    for name, prompt in CASES:
        if Image.open(IMAGES / name).mode == "RGBA":
            continue
        with torch.no_grad():
            image = preprocess_val(Image.open(IMAGES / name)).unsqueeze(0)
            text = tokenizer([prompt])
            with torch.cuda.amp.autocast():
                outputs = model(image, text)
                image_features, text_features = outputs["image_features"], outputs["text_features"]
                logits_per_image = image_features @ text_features.T
                hps_score = torch.diagonal(logits_per_image).cpu().numpy()
        items.append({"image": name, "prompt": prompt, "score": float(hps_score[0]),
                      "pixel_sum": image.double().sum().item()})  # fmt: skip
    return items


def aesthetic(tiny: Path, tmp: Path) -> list[dict]:
    """simple_inference.py: clip.load + preprocess + encode_image → normalized → MLP."""
    checkpoint = tmp / "ViT-tiny-14.pt"  # a TorchScript archive, as OpenAI publishes ViT-L-14.pt
    built = clip.model.build_model(openai_state_dict(load_file(str(tiny / "clip-l" / "model.safetensors"))))
    example = (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
    torch.jit.save(torch.jit.trace(built.float().eval(), example), str(checkpoint))
    mlp_path = tmp / "sac+logos+ava1-tiny.pth"
    torch.save(load_file(str(tiny / "aesthetic-mlp.safetensors")), mlp_path)
    device = "cpu"
    model = MLP(json.loads((tiny / "clip-l" / "config.json").read_text())["projection_dim"])
    s = torch.load(mlp_path)
    model.load_state_dict(s)
    model.to(device)
    model.eval()
    model2, preprocess = clip.load(str(checkpoint), device=device)
    items = []
    for name, prompt in CASES:
        pil_image = Image.open(IMAGES / name)
        image = preprocess(pil_image).unsqueeze(0).to(device)
        with torch.no_grad():
            image_features = model2.encode_image(image)
        im_emb_arr = normalized(image_features.cpu().detach().numpy())
        prediction = model(torch.from_numpy(im_emb_arr).to(device).type(torch.FloatTensor))
        items.append({"image": name, "prompt": prompt, "score": prediction.item(),
                      "pixel_sum": image.double().sum().item()})  # fmt: skip
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", type=Path, required=True, help="written by `python -m hpsv3_serve.judges.tiny`")
    parser.add_argument("--out", type=Path, default=HERE / "official_judges_tiny.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        judges = {"pickscore": pickscore(args.tiny), "clip-h": clip_h(args.tiny, tmp),
                  "aesthetic": aesthetic(args.tiny, tmp), "hpsv2": hpsv2(args.tiny, tmp)}  # fmt: skip
    golden = {
        "made_by": "tests/golden/make_golden_judges.py: PickScore README recipe, open_clip, hpsv2, simple_inference.py",
        "versions": {"transformers": transformers.__version__, "open_clip": open_clip.__version__,
                     "openai-clip": "1.0.1", "hpsv2": "1.2.0", "torch": torch.__version__, "pillow": PIL.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "dtype": "float32",
        "tiny": "python -m hpsv3_serve.judges.tiny",
        "sha256": {name: hashlib.sha256((args.tiny / name).read_bytes()).hexdigest() for name in WEIGHT_FILES},
        "judges": judges,
    }  # fmt: skip
    args.out.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {sum(map(len, judges.values()))} items to {args.out}")


if __name__ == "__main__":
    main()
