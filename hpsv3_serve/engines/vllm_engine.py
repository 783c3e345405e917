"""The language tower (and, by default, the whole model) in vLLM's pooling runner.

The model folder comes from `hpsv3 export --vllm` (`export/vllm_export.py`): a config without
`mrope_section`, so vLLM uses the official plain 1-D positions, and the rm_head as a
sentence-transformers head, so each pooled output is `[mu, log_sigma]`. Images reach vLLM either as
the already-resized image (vLLM's own vision tower; `KEEP_SIZE` makes its processor leave it as is) or as
precomputed `image_embeds` + `image_grid_thw` from another vision encoder (TensorRT on the GPU
target, or any callable here). vLLM expands `<|image_pad|>` itself, so prompts carry one pad per
image; each result is checked against our own token count.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..batching import Batch
from ..errors import ModelLoadError
from ..inputs import FACTOR, PIXELS, image_from_patches
from ..prompt import IMAGE_PAD_TOKEN_ID

VisionEncoder = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]  # uint8 patches, grid → embeds
DEFAULT_MAX_MODEL_LEN = 4096  # ≈ 870 tokens per request, 256 of them image pads; long prompts fit
# The exported processor resizes to 200704 pixels (official); an image we already resized must stay as is,
# and smart_resize keeps any size whose sides are multiples of 28 and whose area lies in this range.
KEEP_SIZE = {"size": {"shortest_edge": FACTOR * FACTOR, "longest_edge": 16 * PIXELS}}


def collapse_image_pads(input_ids: np.ndarray) -> list[int]:
    """Our ids with the run of `<|image_pad|>` reduced to one (vLLM expands it to the image's size)."""
    pads = np.flatnonzero(input_ids == IMAGE_PAD_TOKEN_ID)
    if len(pads) == 0:
        raise ValueError("the prompt has no <|image_pad|> slot for the image")
    return np.concatenate([input_ids[: pads[0] + 1], input_ids[pads[-1] + 1 :]]).tolist()


def embeds_prompt(input_ids: np.ndarray, image_embeds: np.ndarray, grid_thw: tuple[int, int, int]) -> dict:
    """A vLLM prompt that carries precomputed image embeddings (needs `enable_mm_embeds=True`)."""
    import torch

    image = {"image_embeds": torch.from_numpy(np.ascontiguousarray(image_embeds, np.float32)),
             "image_grid_thw": torch.tensor([list(grid_thw)])}  # fmt: skip
    return {"prompt_token_ids": collapse_image_pads(input_ids), "multi_modal_data": {"image": image}}


def image_prompt(input_ids: np.ndarray, patches: np.ndarray, grid_thw: tuple[int, int, int]) -> dict:
    """A vLLM prompt that carries the resized image, for vLLM's own vision tower."""
    image = image_from_patches(patches, grid_thw)
    return {"prompt_token_ids": collapse_image_pads(input_ids), "multi_modal_data": {"image": image},
            "mm_processor_kwargs": KEEP_SIZE}  # fmt: skip


def pooled(outputs: list, lengths: list[int], width: int) -> np.ndarray:
    """float32 [B, width] from vLLM `PoolingRequestOutput`s, after checking vLLM saw exactly our tokens."""
    rows = []
    for output, length in zip(outputs, lengths, strict=True):
        if len(output.prompt_token_ids) != length:
            raise RuntimeError(f"vLLM expanded the prompt to {len(output.prompt_token_ids)} tokens, we have {length}")
        rows.append(output.outputs.data.float().cpu().numpy())
    result = np.stack(rows)
    if result.shape[1] != width:
        raise ModelLoadError(f"vLLM pooled {result.shape[1]} values per item, expected {width}: is this an "
                             "`hpsv3 export --vllm` folder (its modules.json head loaded)?")  # fmt: skip
    return result


def engine_arguments(folder: Path, dtype: str, **overrides: Any) -> dict:
    """`vllm.LLM` / `AsyncEngineArgs` keyword arguments for an exported folder (pooling, LAST token)."""
    import torch
    from vllm.config import PoolerConfig

    arguments = {
        "model": str(folder),
        "runner": "pooling",
        "dtype": dtype,
        "max_model_len": DEFAULT_MAX_MODEL_LEN,
        "enable_mm_embeds": True,  # precomputed image embeddings (trusted callers only: they are not checked)
        "limit_mm_per_prompt": {"image": 1},
        "enable_prefix_caching": False,  # every request has a different image: nothing to reuse
        "pooler_config": PoolerConfig(pooling_type="LAST", use_activation=False),  # no normalising of [mu, ls]
        # CUDA graphs on GPUs; on CPU, compiling takes minutes for little gain on a pooling (prefill-only) model
        "enforce_eager": not torch.cuda.is_available(),
    }
    arguments.update(overrides)
    return arguments


class VllmEngine:
    """`Engine` on `vllm.LLM`: the batch goes to vLLM as one list of prompts (it schedules them).

    With `vision` (uint8 patches, grid → embeddings) images go in as embeddings, else as images."""

    name = "vllm"

    def __init__(self, folder: Path, dtype: str = "float32", vision: VisionEncoder | None = None, **overrides: Any):
        from vllm import LLM

        self.vision = vision
        self.llm = LLM(**engine_arguments(Path(folder), dtype, **overrides))

    def prompt(self, batch: Batch, row: int, patches: np.ndarray) -> dict:
        ids = batch.input_ids[row, : batch.reward_index[row] + 1]
        grid = tuple(int(v) for v in batch.image_grid_thw[row])
        if self.vision is None:
            return image_prompt(ids, patches, grid)
        return embeds_prompt(ids, self.vision(patches, grid), grid)

    def close(self) -> None:
        """Stop vLLM's engine core (its process, sockets and threads) now: left to interpreter exit, its
        teardown can abort the process ("terminate called without an active exception")."""
        self.llm.llm_engine.engine_core.shutdown()

    def score(self, batch: Batch) -> np.ndarray:
        offsets = np.cumsum([0] + [h * w for _, h, w in batch.image_grid_thw])
        prompts = [self.prompt(batch, row, batch.patches[offsets[row] : offsets[row + 1]]) for row in range(len(batch))]
        outputs = self.llm.encode(prompts, use_tqdm=False, pooling_task="embed")
        return pooled(outputs, (batch.reward_index + 1).tolist(), width=2)
