"""Export-friendly wrappers around the reference model's own submodules (no weights copied).

transformers' vision attention splits packed images with a data-dependent `torch.split`, which
does not export; `VisionEncoder` runs the same HF blocks on ONE image with host-computed rotary
position ids, so attention stays within the image exactly as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

from hpsv3_serve.model import HPSv3RewardModel


class VisionEncoder(nn.Module):
    """pixel_values [N,1176] + position_ids [N,2] (one image) → image_embeds [N/4, hidden]."""

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, pixel_values: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        proj = visual.patch_embed.proj.weight
        hidden = F.linear(pixel_values.to(proj.dtype), proj.reshape(proj.shape[0], -1))  # Conv3d, stride = kernel
        cos, sin = visual.rotary_pos_emb(hidden, position_ids)
        for block in visual.blocks:
            attn = block.attn
            qkv = attn.qkv(block.norm1(hidden)).reshape(hidden.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3)
            query, key = apply_rotary_pos_emb_vision(qkv[0], qkv[1], cos, sin)
            heads = [t.transpose(0, 1).unsqueeze(0) for t in (query, key, qkv[2])]
            out = F.scaled_dot_product_attention(*heads, scale=attn.scaling)
            hidden = hidden + attn.proj(out.squeeze(0).transpose(0, 1).reshape(hidden.shape[0], -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return visual.merger(hidden)


class LanguageTower(nn.Module):
    """inputs_embeds [B,L,H], position_ids [B,L], attention_mask [B,L], reward_index [B] → hidden [B,H]."""

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.language_model = model.language_model

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        reward_index: torch.Tensor,
    ) -> torch.Tensor:
        hidden = self.language_model(
            inputs_embeds=inputs_embeds, position_ids=position_ids, attention_mask=attention_mask
        ).last_hidden_state
        return hidden[torch.arange(hidden.shape[0]), reward_index]


class RewardHead(nn.Module):
    """hidden [B,H] → mu [B], sigma [B] (fp32, sigma = exp(log_sigma))."""

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.rm_head = model.rm_head

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = self.rm_head(hidden.float())
        return rewards[:, 0], rewards[:, 1].exp()
