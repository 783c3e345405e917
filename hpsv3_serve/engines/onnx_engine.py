"""ONNX Runtime stages of the exported model, and an engine that chains them in-process.

The Triton CPU models each run one stage (vision encoder, language tower, reward head);
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
FORMAT_VERSION = 2  # 2: the vision graph takes uint8 patches [1, N, 588] and normalises in-graph


def read_manifest(artifacts: Path) -> dict:
    """The export manifest, or a clear error saying how to create (or refresh) the artifacts."""
    path = Path(artifacts) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(f"{artifacts}: no {MANIFEST_FILE}; create the artifacts with `hpsv3 export`")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{artifacts}: exported in format {manifest.get('format')}, this version reads format "
            f"{FORMAT_VERSION}; export again with `hpsv3 export` (`hpsv3 serve` does it by itself)"
        )
    return manifest


def _session(artifacts: Path, name: str, threads: int, providers: list[str] | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not burn CPU
    return ort.InferenceSession(str(artifacts / name), options, providers=providers or ["CPUExecutionProvider"])


class OnnxVisionEncoder:
    """vision_encoder.onnx: one image's patches → its merged embeddings."""

    def __init__(self, artifacts: Path, threads: int = 0, providers: list[str] | None = None) -> None:
        self.session = _session(Path(artifacts), VISION_FILE, threads, providers)

    def __call__(self, patches: np.ndarray, grid_thw: tuple[int, int, int]) -> np.ndarray:
        """uint8 [h·w, 588] patches of an image with this grid → [h·w/4, hidden]."""
        return self.run(patches, vision_position_ids(grid_thw))

    def run(self, patches: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """uint8 patches + their rotary (row, column) ids [h·w, 2] → [h·w/4, hidden].

        The graph folds the processor's normalisation into its patch embedding and has a leading batch dimension
        of 1 (one image per run), the shape Triton passes to a model with max_batch_size 1."""
        feeds = {"patches": patches[None], "position_ids": position_ids[None]}
        embeds = self.session.run(None, feeds)[0][0]
        expected = patches.shape[0] // (MERGE_SIZE * MERGE_SIZE)
        if embeds.shape[0] != expected:
            raise RuntimeError(f"vision encoder returned {embeds.shape[0]} embeddings, expected {expected}")
        return embeds


class OnnxLanguageTower:
    """Host-side embedding lookup + language_model.onnx: token ids and image embeddings → hidden at <|Reward|>."""

    def __init__(self, artifacts: Path, threads: int = 0, providers: list[str] | None = None) -> None:
        self.dtype = np.dtype(read_manifest(artifacts)["numpy_dtype"])
        self.session = _session(Path(artifacts), LANGUAGE_FILE, threads, providers)
        self.embed_tokens = np.load(Path(artifacts) / EMBED_FILE, mmap_mode="r")

    def embed(self, input_ids: np.ndarray, image_embeds: np.ndarray) -> np.ndarray:
        """Token embeddings with the image embeddings in the `<|image_pad|>` slots: [L, hidden]."""
        embeds = np.array(self.embed_tokens[input_ids], dtype=self.dtype)
        slots = input_ids == IMAGE_PAD_TOKEN_ID
        if slots.sum() != len(image_embeds):
            raise ValueError(f"{slots.sum()} image slots but {len(image_embeds)} image embeddings")
        embeds[slots] = image_embeds
        return embeds

    def __call__(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Right-pad embedded sequences (each ending at <|Reward|>), run the tower: [B, hidden]."""
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
        return self.session.run(None, feeds)[0]


class OnnxRewardHead:
    """reward_head.onnx in fp32: hidden [B, hidden] → (mu [B], sigma [B])."""

    def __init__(self, artifacts: Path, threads: int = 0, providers: list[str] | None = None) -> None:
        self.session = _session(Path(artifacts), HEAD_FILE, threads, providers)

    def __call__(self, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, sigma = self.session.run(None, {"hidden": hidden.astype(np.float32)})
        return mu, sigma


class OnnxEngine:
    """`Engine` chaining the three stages: the same math the Triton CPU models run, in one process."""

    name = "onnxruntime"

    def __init__(self, artifacts: Path, threads: int = 0) -> None:
        self.vision = OnnxVisionEncoder(artifacts, threads)
        self.language = OnnxLanguageTower(artifacts, threads)
        self.head = OnnxRewardHead(artifacts, threads)

    def score(self, batch: Batch) -> np.ndarray:
        offsets = np.cumsum([0] + [h * w for _, h, w in batch.image_grid_thw])
        sequences = []
        for row, grid in enumerate(batch.image_grid_thw):
            image = self.vision(batch.patches[offsets[row] : offsets[row + 1]], tuple(grid))
            ids = batch.input_ids[row, : batch.reward_index[row] + 1]
            sequences.append(self.language.embed(ids, image))
        mu, sigma = self.head(self.language(sequences))
        return np.stack([mu, np.log(sigma)], axis=1).astype(np.float32)

    def close(self) -> None:
        """Nothing to release beyond memory (the sessions go with the engine)."""
