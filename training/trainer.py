"""`RewardTrainer`: Hugging Face Trainer with the pairwise loss, held-out pair accuracy, full-state checkpoints.

One forward pass scores a batch of 2B sequences (B preferred images, then B others; right padding and
the attention mask keep them independent). Evaluation reports `accuracy` = share of pairs with
mu(preferred) > mu(other), as the official evaluation, and `model_ties` (mu exactly equal) apart.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import EvalPrediction, Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .losses import LOSSES

CHECKPOINT_WEIGHTS = "model.safetensors"  # Trainer's SAFE_WEIGHTS_NAME: what `resume_from_checkpoint` reads


def pair_accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """`accuracy` and `model_ties` from predictions [N, 2] = (mu preferred, mu other)."""
    mu = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2)
    return {"accuracy": float(np.mean(mu[:, 0] > mu[:, 1])), "model_ties": float(np.sum(mu[:, 0] == mu[:, 1]))}


class RewardTrainer(Trainer):
    """Trainer for the reward model: `loss_type` picks the loss (see `losses.LOSSES`); `reward_row_lr` is the
    learning rate of the `<|Reward|>` embedding row (the official `special_token_lr`)."""

    def __init__(self, *args, loss_type: str = "uncertainty", reward_row_lr: float | None = None, **kwargs) -> None:
        if loss_type not in LOSSES:
            raise ValueError(f"loss.type {loss_type!r} is not one of {', '.join(LOSSES)}")
        super().__init__(*args, **kwargs)
        self.loss_fn = LOSSES[loss_type]
        self.reward_row_lr = reward_row_lr

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with the reward row in its own group (own lr, no weight decay)."""
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(opt_model))
            groups: dict[str, dict] = {
                "decay": {"params": [], "weight_decay": self.args.weight_decay},
                "no_decay": {"params": [], "weight_decay": 0.0},
                "reward_row": {"params": [], "weight_decay": 0.0, "lr": self.reward_row_lr or self.args.learning_rate},
            }
            for name, param in opt_model.named_parameters():
                if param.requires_grad:
                    group = "reward_row" if name.endswith("reward_row") else "decay" if name in decay else "no_decay"
                    groups[group]["params"].append(param)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls([g for g in groups.values() if g["params"]], **optimizer_kwargs)
        return self.optimizer

    def _rewards(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            reward_index=inputs["reward_index"],
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
        ).float()
        return outputs.chunk(2)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The configured pairwise loss on [mu, log_sigma] of the preferred and the other image."""
        chosen, rejected = self._rewards(model, inputs)
        loss = self.loss_fn(chosen, rejected, inputs["tied"])
        return (loss, (chosen, rejected)) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """(loss, [B, 2] mu of the preferred and the other image, dummy labels) for `pair_accuracy`."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, (chosen, rejected) = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        mu = torch.stack([chosen[:, 0], rejected[:, 0]], dim=1)
        return loss.detach(), mu, torch.ones(len(mu), device=mu.device)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The whole state dict as safetensors (also under LoRA, whose trained rm_head and reward row are not
        adapter weights); `resume_from_checkpoint` loads it back."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        state = self.model.state_dict() if state_dict is None else state_dict
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(output_dir, CHECKPOINT_WEIGHTS))


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete `checkpoint-N` folder in output_dir, or None. Trainer writes trainer_state.json
    last, so a folder without it was cut off mid-save (Ctrl-C, a killed job) and is passed over."""
    if not os.path.isdir(output_dir):
        return None
    steps = [
        int(name.split("-")[-1])
        for name in os.listdir(output_dir)
        if name.startswith(PREFIX_CHECKPOINT_DIR + "-")
        and os.path.isfile(os.path.join(output_dir, name, TRAINER_STATE_NAME))
    ]
    return os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{max(steps)}") if steps else None
