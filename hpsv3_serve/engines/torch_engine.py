"""The PyTorch reference engine: the HPSv3 reward model in-process on CPU or CUDA."""

from __future__ import annotations

import numpy as np
import torch

from ..batching import Batch
from ..model import HPSv3RewardModel


class TorchEngine:
    """Runs `HPSv3RewardModel` on a device; vision attention stays within each image."""

    name = "torch"

    def __init__(self, model: HPSv3RewardModel, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def score(self, batch: Batch) -> np.ndarray:
        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(self.device)

        rewards = self.model(
            input_ids=tensor(batch.input_ids),
            attention_mask=tensor(batch.attention_mask),
            reward_index=tensor(batch.reward_index),
            pixel_values=tensor(batch.pixel_values),
            image_grid_thw=tensor(batch.image_grid_thw),
        )
        return rewards.float().cpu().numpy()

    def close(self) -> None:
        """Nothing to release beyond memory."""
