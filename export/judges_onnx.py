"""The judges (`hpsv3_serve.judges`: the CLIP judges' towers, ImageReward) → ONNX, verified against the torch judge;
`hpsv3_serve.judges.onnx_judge.OnnxJudge` scores with them (prepare as the torch judge, no torch weights loaded).

- `image.onnx`: `PIXELS` float32 [B, 3, S, S] (the judge's own preprocessing) → `IMAGE_EMBEDS`, L2-normalised; for
  the aesthetic judge → `SCORE` [B] (normalised embeds through the MLP).
- `text.onnx` (judges that read the prompt): `INPUT_IDS`, `ATTENTION_MASK` int64 [B, L] → `TEXT_EMBEDS`,
  L2-normalised. The score is their dot product (PickScore: times `logit_scale`, in `judge.json`).
- ImageReward: one graph, `score.onnx`: `PIXELS` float32 [B, 3, 224, 224], `INPUT_IDS`, `ATTENTION_MASK` int64
  [B, L] (L is 35: the tokenizer pads to it) → `SCORE` [B] (ViT → BERT with cross-attention → [CLS] → MLP →
  `(x - MEAN) / STD`), as `ImageRewardJudge.score_batch`.

torch.onnx's TorchScript exporter (opset 17) traces transformers' CLIPModel and BLIP models cleanly (the dynamo
exporter is not needed for these plain ViTs and BERTs); batch and prompt length are dynamic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.judges import imagereward
from hpsv3_serve.judges.clip_judges import AestheticJudge, ClipJudge, PickScoreJudge
from hpsv3_serve.judges.imagereward import ImageRewardJudge
from hpsv3_serve.judges.onnx_judge import IMAGE_FILE, MANIFEST, SCORE_FILE, TEXT_FILE

OPSET = 17


def _normalised(embeds: torch.Tensor) -> torch.Tensor:
    return embeds / embeds.norm(dim=-1, keepdim=True)


class ImageTower(nn.Module):
    """Pixels → the judge's L2-normalised image embeds (the aesthetic judge: its score)."""

    def __init__(self, judge: ClipJudge) -> None:
        super().__init__()
        self.model, self.mlp = judge.model, getattr(judge, "mlp", None)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return _normalised(self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output))
        embeds = self.model(pixel_values=pixels).image_embeds.float()
        norms = embeds.norm(dim=-1, keepdim=True)
        return self.mlp(embeds / torch.where(norms == 0, torch.ones_like(norms), norms))[:, 0]


class TextTower(nn.Module):
    """Token ids + mask → the judge's L2-normalised text embeds."""

    def __init__(self, judge: ClipJudge) -> None:
        super().__init__()
        self.model = judge.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return _normalised(self.model.text_projection(output.pooler_output))


class ImageRewardGraph(nn.Module):
    """Pixels, token ids + mask → ImageReward's score (`ImageRewardJudge.score_batch` as one graph)."""

    def __init__(self, judge: ImageRewardJudge) -> None:
        super().__init__()
        self.vision, self.text, self.mlp = judge.vision, judge.text, judge.mlp

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        output = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                           encoder_attention_mask=image_atts, is_decoder=False)  # fmt: skip
        return ((self.mlp(output.last_hidden_state[:, 0, :].float()) - imagereward.MEAN) / imagereward.STD)[:, 0]


def _export_imagereward(judge: ImageRewardJudge, out: Path) -> dict:
    """`score.onnx` and `tokenizer.json` (padding and truncation to 35 kept) for ImageReward; its manifest."""
    size = imagereward.IMAGE_SIZE
    pixels = torch.zeros((2, 3, size, size), dtype=judge.vision.dtype)
    encodings = [judge.tokenizer.encode(prompt) for prompt in ("a fox", "a red fox in the snow")]
    ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long)
    mask = torch.tensor([encoding.attention_mask for encoding in encodings], dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on transformers' shape checks
        torch.onnx.export(
            ImageRewardGraph(judge).eval(), (pixels, ids, mask), str(out / SCORE_FILE),
            input_names=["PIXELS", "INPUT_IDS", "ATTENTION_MASK"], output_names=["SCORE"],
            dynamic_axes={"PIXELS": {0: "batch"}, "INPUT_IDS": {0: "batch", 1: "length"},
                          "ATTENTION_MASK": {0: "batch", 1: "length"}},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    judge.tokenizer.save(str(out / "tokenizer.json"))
    return {"judge": judge.name, "image_size": size, "reads_prompt": True, "scale": 1.0}


def export_judge(judge: ClipJudge | ImageRewardJudge, out: Path, tolerance: float = 1e-5) -> Path:
    """Write `image.onnx`, `text.onnx` and `tokenizer.json` (if the judge reads prompts) and `judge.json` for `judge`
    into `out` (ImageReward: `score.onnx`, `tokenizer.json`, `judge.json`); refused when ONNX Runtime's score of a
    test image is off torch's by more than `tolerance` (relative to max(1, |score|))."""
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(judge, ImageRewardJudge):
        manifest = _export_imagereward(judge, out)
        return _check_parity(judge, out, manifest, tolerance)
    size = judge.image_size
    pixels = torch.zeros((2, 3, size, size), dtype=judge.model.dtype)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on transformers' shape checks (fixed here by design)
        torch.onnx.export(
            ImageTower(judge).eval(), (pixels,), str(out / IMAGE_FILE), input_names=["PIXELS"],
            output_names=["SCORE" if isinstance(judge, AestheticJudge) else "IMAGE_EMBEDS"],
            dynamic_axes={"PIXELS": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
        if judge.reads_prompt:
            ids = torch.tensor([[49406, 320, 49407, 0], [49406, 320, 539, 49407]], dtype=torch.long)
            mask = (torch.arange(4)[None] <= torch.tensor([[2], [3]])).long()
            torch.onnx.export(
                TextTower(judge).eval(), (ids, mask), str(out / TEXT_FILE),
                input_names=["INPUT_IDS", "ATTENTION_MASK"], output_names=["TEXT_EMBEDS"],
                dynamic_axes={"INPUT_IDS": {0: "batch", 1: "length"}, "ATTENTION_MASK": {0: "batch", 1: "length"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
            judge.tokenizer.save(str(out / "tokenizer.json"))
    scale = float(judge.model.logit_scale.detach().exp()) if isinstance(judge, PickScoreJudge) else 1.0
    manifest = {"judge": judge.name, "image_size": size, "reads_prompt": judge.reads_prompt, "scale": scale}
    return _check_parity(judge, out, manifest, tolerance)


def _check_parity(judge, out: Path, manifest: dict, tolerance: float) -> Path:
    """Write `judge.json`; refuse the export when ONNX Runtime's score of a test image is off torch's."""
    from hpsv3_serve.judges.onnx_judge import OnnxJudge

    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    gradient = np.linspace(0, 255, 3 * 200 * 300).reshape(200, 300, 3).astype(np.uint8)
    item = judge.prepare(Image.fromarray(gradient), "a photo of a red fox in the snow")
    want, got = judge.score_batch([item])[0], OnnxJudge(out).score_batch([item])[0]
    if abs(got - want) > tolerance * max(1.0, abs(want)):
        raise ModelLoadError(f"{judge.name}: ONNX Runtime scores {got} where torch scores {want}; export refused")
    (out / MANIFEST).write_text(json.dumps(manifest | {"parity": abs(got - want)}, indent=2) + "\n", encoding="utf-8")
    return out
