"""What each internal step of the served graph accepts: exactly what the step before it can make.

Any client can call `vision_encoder`, `language_model` or `reward_head` directly, skipping `preprocess`. These
checks (cheap next to the step itself) refuse what `preprocess` would never produce, so a hand-made tensor cannot
make a step run huge attention, read outside the embedding table or mix up an image with the wrong grid. The token
ids are checked by `prompt.SequenceRules`, which knows the prompt's shape. Each failure is a `TensorError` naming
the tensor.
"""

from __future__ import annotations

import numpy as np

from .errors import TensorError
from .inputs import MAX_PATCHES, MERGE_SIZE, MIN_PATCHES, PATCH_BYTES, vision_position_ids

PATCHES, POSITION_IDS, GRID_THW, IMAGE_EMBEDS, HIDDEN = (
    "_PATCHES",
    "_POSITION_IDS",
    "_GRID_THW",
    "_IMAGE_EMBEDS",
    "_HIDDEN",
)


def _expect(array: np.ndarray, name: str, dtype: type, shape: tuple[int | None, ...]) -> None:
    """`array` has `dtype` and `shape` (None: any size on that axis)."""
    fits = array.dtype == dtype and array.ndim == len(shape)
    fits = fits and all(want is None or want == got for want, got in zip(shape, array.shape, strict=True))
    if not fits:
        wanted = "[" + ", ".join("N" if size is None else str(size) for size in shape) + "]"
        raise TensorError(name, f"expected {np.dtype(dtype)} {wanted}, got {array.dtype} {list(array.shape)}")


def single(array: np.ndarray, name: str) -> np.ndarray:
    """The one item of a request: every step takes one item per request, as the ensemble sends them."""
    if array.ndim == 0 or array.shape[0] != 1:
        raise TensorError(name, f"a batch of {array.shape[0] if array.ndim else 0}; send one item per request")
    return array[0]


def _check_patch_count(count: int, name: str) -> None:
    if not MIN_PATCHES <= count <= MAX_PATCHES:
        raise TensorError(name, f"{count} patches; preprocess makes {MIN_PATCHES} to {MAX_PATCHES}")


def check_patches(patches: np.ndarray, position_ids: np.ndarray) -> tuple[int, int, int]:
    """One image's uint8 patches [N, 588] and their rotary ids [N, 2] as `inputs.patch_pixels` and
    `inputs.vision_position_ids` make them; returns the image's grid."""
    _expect(patches, PATCHES, np.uint8, (None, PATCH_BYTES))
    _check_patch_count(len(patches), PATCHES)
    _expect(position_ids, POSITION_IDS, np.int64, (None, 2))
    if len(position_ids) != len(patches):
        raise TensorError(PATCHES, f"{len(patches)} patches for an image grid of {len(position_ids)}")
    grid = (1, int(position_ids[:, 0].max()) + 1, int(position_ids[:, 1].max()) + 1)
    if grid[1] * grid[2] != len(patches) or grid[1] % MERGE_SIZE or grid[2] % MERGE_SIZE:
        raise TensorError(POSITION_IDS, f"rows × columns {grid[1]}×{grid[2]} do not tile {len(patches)} patches")
    if not np.array_equal(position_ids, vision_position_ids(grid)):
        raise TensorError(POSITION_IDS, f"not the {grid[1]}×{grid[2]} grid's (row, column) ids in merge order")
    return grid


def check_grid(grid: np.ndarray, name: str = GRID_THW) -> tuple[int, int, int]:
    """An image grid (1, h, w) in 14-pixel patches, h and w even, h·w within the patch range."""
    _expect(grid, name, np.int64, (3,))
    frames, height, width = (int(value) for value in grid)
    if frames != 1 or height <= 0 or width <= 0 or height % MERGE_SIZE or width % MERGE_SIZE:
        raise TensorError(name, f"{[frames, height, width]} is not a still image's (1, h, w) with h and w even")
    _check_patch_count(height * width, name)
    return frames, height, width


def check_image_embeds(embeds: np.ndarray, grid: tuple[int, int, int], hidden_size: int) -> None:
    """float32 [h·w/4, hidden] finite image embeddings for `grid`."""
    tokens = grid[1] * grid[2] // (MERGE_SIZE * MERGE_SIZE)
    _expect(embeds, IMAGE_EMBEDS, np.float32, (tokens, hidden_size))
    if not np.isfinite(embeds).all():
        raise TensorError(IMAGE_EMBEDS, "holds NaN or infinite values")


def check_hidden(hidden: np.ndarray, hidden_size: int) -> None:
    """float32 [hidden] finite hidden state at `<|Reward|>`."""
    _expect(hidden, HIDDEN, np.float32, (hidden_size,))
    if not np.isfinite(hidden).all():
        raise TensorError(HIDDEN, "holds NaN or infinite values")
