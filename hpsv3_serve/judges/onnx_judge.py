"""A judge on ONNX Runtime: the torch judge's own `prepare` (preprocessing, tokens) and its exported graphs
(`export/judges_onnx.py`: the CLIP judges' image.onnx, text.onnx; ImageReward's score.onnx; judge.json,
tokenizer.json) for `score_batch`. No torch weights are loaded; the scores equal the torch judge's to 1e-5
(tests/test_judges_onnx.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..limits import DEFAULT_LIMITS, InputLimits
from .clip_judges import AestheticJudge, ClipCosineJudge, ClipItem, ClipJudge, PickScoreJudge, load_clip_tokenizer
from .hpsv2 import HPSv2Judge
from .imagereward import ImageRewardItem, ImageRewardJudge

IMAGE_FILE, TEXT_FILE, SCORE_FILE, MANIFEST = "image.onnx", "text.onnx", "score.onnx", "judge.json"
CLASSES = {"pickscore": PickScoreJudge, "clip-h": ClipCosineJudge, "aesthetic": AestheticJudge,
           "hpsv2": HPSv2Judge, "hpsv2.1": HPSv2Judge, "imagereward": ImageRewardJudge}  # fmt: skip


def load_tokenizer(folder: Path):
    """The judge's tokenizer as exported (ImageReward's: its padding and truncation to 35 kept in tokenizer.json)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def preparer(name: str, image_size: int, tokenizer, limits: InputLimits) -> ClipJudge | ImageRewardJudge:
    """The judge class's `prepare` without its model: only what preparing reads (size, tokenizer, limits)."""
    judge = CLASSES[name].__new__(CLASSES[name])
    judge.name, judge.image_size, judge.tokenizer, judge.limits = name, image_size, tokenizer, limits
    judge.model, judge.device = None, "cpu"
    return judge


class OnnxJudge:
    """`prepare` as the torch judge, `score_batch` on the exported towers in ONNX Runtime (CPU)."""

    def __init__(self, folder: Path, limits: InputLimits = DEFAULT_LIMITS, threads: int = 0) -> None:
        import onnxruntime

        folder = Path(folder)
        try:
            self.manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder}: no judge.json; export the judge first (export/judges_onnx.py)") from exc
        self.name = self.manifest["judge"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads

        def session(name: str):
            return onnxruntime.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])

        if self.name == "imagereward":  # one graph: pixels and tokens → score
            self.image, self.text, self.score = None, None, session(SCORE_FILE)
            tokenizer = load_tokenizer(folder)
        else:
            self.image, self.score = session(IMAGE_FILE), None
            self.text = session(TEXT_FILE) if self.manifest["reads_prompt"] else None
            tokenizer = load_clip_tokenizer(folder) if self.text is not None else None
        self._preparer = preparer(self.name, self.manifest["image_size"], tokenizer, limits)

    def prepare(self, image, prompt: str) -> ClipItem | ImageRewardItem:
        return self._preparer.prepare(image, prompt)

    def score_batch(self, items: list[ClipItem] | list[ImageRewardItem]) -> list[float]:
        if self.score is not None:
            inputs = {"PIXELS": np.stack([item.pixels for item in items]),
                      "INPUT_IDS": np.array([item.input_ids for item in items], np.int64),
                      "ATTENTION_MASK": np.array([item.attention_mask for item in items], np.int64)}  # fmt: skip
            return self.score.run(None, inputs)[0].astype(np.float64).tolist()
        image = self.image.run(None, {"PIXELS": np.stack([item.pixels for item in items])})[0]
        if self.text is None:
            return image.astype(np.float64).tolist()
        width = max(len(item.token_ids) for item in items)
        ids = np.zeros((len(items), width), np.int64)
        mask = np.zeros((len(items), width), np.int64)
        for row, item in enumerate(items):
            ids[row, : len(item.token_ids)], mask[row, : len(item.token_ids)] = item.token_ids, 1
        text = self.text.run(None, {"INPUT_IDS": ids, "ATTENTION_MASK": mask})[0]
        return (self.manifest["scale"] * (image * text).sum(axis=-1)).astype(np.float64).tolist()
