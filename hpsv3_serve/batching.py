"""Model-ready items and right-padded batches: the tensors every engine consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inputs import PreparedImage, normalise_patches
from .prompt import PAD_TOKEN_ID


@dataclass(frozen=True)
class PreparedItem:
    """One (image, prompt) pair, tokenised and patchified; its sequence ends at `<|Reward|>`."""

    input_ids: np.ndarray  # int64 [L]
    image: PreparedImage


@dataclass(frozen=True)
class Batch:
    """Right-padded with `<|endoftext|>`, as the official collator does."""

    input_ids: np.ndarray  # int64 [B, L]
    attention_mask: np.ndarray  # int64 [B, L]
    reward_index: np.ndarray  # int64 [B]: position of `<|Reward|>` (the last real token)
    patches: np.ndarray  # uint8 [sum patches, 588]
    image_grid_thw: np.ndarray  # int64 [B, 3]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def pixel_values(self) -> np.ndarray:
        """float32 [sum patches, 1176]: the processor's normalised patches (for the torch reference)."""
        return normalise_patches(self.patches)


def pad_ids(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-pad token sequences with `<|endoftext|>`: (input_ids [B, L], attention_mask [B, L], reward_index [B])."""
    lengths = np.array([len(ids) for ids in sequences], np.int64)
    input_ids = np.full((len(sequences), int(lengths.max())), PAD_TOKEN_ID, np.int64)
    attention_mask = np.zeros_like(input_ids)
    for row, ids in enumerate(sequences):
        input_ids[row, : lengths[row]] = ids
        attention_mask[row, : lengths[row]] = 1
    return input_ids, attention_mask, lengths - 1


def collate(items: list[PreparedItem]) -> Batch:
    """Stack prepared items into one right-padded batch."""
    input_ids, attention_mask, reward_index = pad_ids([item.input_ids for item in items])
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        reward_index=reward_index,
        patches=np.concatenate([item.image.patches for item in items]),
        image_grid_thw=np.array([item.image.grid_thw for item in items], np.int64),
    )
