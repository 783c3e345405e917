"""ONNX Runtime stages of the exported model, and an engine that chains them in-process.

The Triton CPU models call the stages one by one (vision encoder, language tower, reward head);
`OnnxEngine` chains them for `hpsv3 score --backend onnx` and for export verification.
Artifacts folder (written by `hpsv3 export`): vision_encoder.onnx, language_model.onnx(+.data),
reward_head.onnx, embed_tokens.npy, base/ (config + tokenizer), manifest.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..batching import Batch
from ..errors import ModelLoadError
from ..inputs import MERGE_SIZE, vision_position_ids
from ..prompt import IMAGE_PAD_TOKEN_ID

VISION_FILE = "vision_encoder.onnx"
LANGUAGE_FILE = "language_model.onnx"
HEAD_FILE = "reward_head.onnx"
EMBED_FILE = "embed_tokens.npy"
MANIFEST_FILE = "manifest.json"
BASE_DIR = "base"


def read_manifest(artifacts: Path) -> dict:
    """The export manifest, or a clear error saying how to create the artifacts."""
    path = Path(artifacts) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(f"{artifacts}: no {MANIFEST_FILE}; create the artifacts with `hpsv3 export`")
    return json.loads(path.read_text(encoding="utf-8"))


class OnnxStages:
    """The three exported graphs plus the host-side embedding lookup, on ONNX Runtime."""

    def __init__(self, artifacts: Path, threads: int = 0, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.artifacts = Path(artifacts)
        self.manifest = read_manifest(self.artifacts)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(self.artifacts / name), options, providers=providers)

        self.vision = session(VISION_FILE)
        self.language = session(LANGUAGE_FILE)
        self.head_session = session(HEAD_FILE)
        self.embed_tokens = np.load(self.artifacts / EMBED_FILE, mmap_mode="r")
        self.dtype = np.dtype(self.manifest["numpy_dtype"])

    def encode_image(self, pixel_values: np.ndarray, grid_thw: tuple[int, int, int]) -> np.ndarray:
        """One image's patches → its merged embeddings [h·w/4, hidden]."""
        feeds = {"pixel_values": pixel_values.astype(self.dtype), "position_ids": vision_position_ids(grid_thw)}
        embeds = self.vision.run(None, feeds)[0]
        expected = pixel_values.shape[0] // (MERGE_SIZE * MERGE_SIZE)
        if embeds.shape[0] != expected:
            raise RuntimeError(f"vision encoder returned {embeds.shape[0]} embeddings, expected {expected}")
        return embeds

    def embed(self, input_ids: np.ndarray, image_embeds: np.ndarray) -> np.ndarray:
        """Token embeddings with the image embeddings in the `<|image_pad|>` slots: [L, hidden]."""
        embeds = np.array(self.embed_tokens[input_ids], dtype=self.dtype)
        slots = input_ids == IMAGE_PAD_TOKEN_ID
        if slots.sum() != len(image_embeds):
            raise RuntimeError(f"{slots.sum()} image slots but {len(image_embeds)} image embeddings")
        embeds[slots] = image_embeds
        return embeds

    def tower(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Right-pad embedded sequences, run the language tower, read the last position: [B, hidden]."""
        lengths = np.array([len(s) for s in sequences], np.int64)
        batch, length, hidden = len(sequences), int(lengths.max()), sequences[0].shape[1]
        inputs_embeds = np.zeros((batch, length, hidden), self.dtype)
        attention_mask = np.zeros((batch, length), np.int64)
        for row, sequence in enumerate(sequences):
            inputs_embeds[row, : len(sequence)] = sequence
            attention_mask[row, : len(sequence)] = 1
        feeds = {
            "inputs_embeds": inputs_embeds,
            "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length)).copy(),
            "attention_mask": attention_mask,
            "reward_index": lengths - 1,
        }
        return self.language.run(None, feeds)[0]

    def head(self, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reward head in fp32: (mu [B], sigma [B])."""
        mu, sigma = self.head_session.run(None, {"hidden": hidden.astype(np.float32)})
        return mu, sigma


class OnnxEngine:
    """`Engine` over `OnnxStages`: the same math the Triton CPU models run, in one process."""

    name = "onnxruntime"

    def __init__(self, artifacts: Path, threads: int = 0) -> None:
        self.stages = OnnxStages(artifacts, threads=threads)

    def score(self, batch: Batch) -> np.ndarray:
        offsets = np.cumsum([0] + [h * w for _, h, w in batch.image_grid_thw])
        sequences = []
        for row, grid in enumerate(batch.image_grid_thw):
            image = self.stages.encode_image(batch.pixel_values[offsets[row] : offsets[row + 1]], tuple(grid))
            ids = batch.input_ids[row, : batch.reward_index[row] + 1]
            sequences.append(self.stages.embed(ids, image))
        mu, sigma = self.stages.head(self.stages.tower(sequences))
        return np.stack([mu, np.log(sigma)], axis=1).astype(np.float32)
