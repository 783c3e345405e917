"""Export-friendly wrappers around the reference model's own submodules (no weights copied).

transformers' vision attention splits packed images with a data-dependent `torch.split`, which
does not export; `VisionEncoder` runs the same HF blocks on ONE image with host-computed rotary
position ids, so attention stays within the image exactly as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

from hpsv3_serve.inputs import NORMALISED, TEMPORAL_PATCH_SIZE
from hpsv3_serve.model import HPSv3RewardModel


class VisionEncoder(nn.Module):
    """patches uint8 [1,N,588] + position_ids [1,N,2] (one image) → image_embeds [1, N/4, hidden].

    The uint8 patches (`inputs.patch_pixels`) are normalised in-graph with the processor's own
    table (`inputs.NORMALISED`) and the frame repeated to temporal_patch_size: the same bits as the
    processor's `pixel_values`, at one eighth of the bytes between the serving steps. The leading 1
    is the batch dimension Triton's batching models (max_batch_size 1) pass.
    """

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.visual = model.visual
        self.register_buffer("normalised", torch.from_numpy(NORMALISED.ravel().copy()), persistent=False)
        self.register_buffer("channel_offsets", torch.arange(0, 3 * 256, 256).view(1, 3, 1), persistent=False)

    def pixel_values(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 [N,588] → float [N,1176] (channel, frame, 14·14), as `inputs.normalise_patches`."""
        count = patches.shape[0]
        values = self.normalised[patches.long().view(count, 3, -1) + self.channel_offsets]
        return values.unsqueeze(2).expand(count, 3, TEMPORAL_PATCH_SIZE, values.shape[-1]).reshape(count, -1)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        proj = visual.patch_embed.proj.weight
        position_ids = position_ids[0]
        pixel_values = self.pixel_values(patches[0]).to(proj.dtype)
        hidden = F.linear(pixel_values, proj.reshape(proj.shape[0], -1))  # Conv3d, stride = kernel
        cos, sin = visual.rotary_pos_emb(hidden, position_ids)
        for block in visual.blocks:
            attn = block.attn
            qkv = attn.qkv(block.norm1(hidden)).reshape(hidden.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3)
            query, key = apply_rotary_pos_emb_vision(qkv[0], qkv[1], cos, sin)
            heads = [t.transpose(0, 1).unsqueeze(0) for t in (query, key, qkv[2])]
            out = F.scaled_dot_product_attention(*heads, scale=attn.scaling)
            hidden = hidden + attn.proj(out.squeeze(0).transpose(0, 1).reshape(hidden.shape[0], -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return visual.merger(hidden).unsqueeze(0)


class LanguageTower(nn.Module):
    """inputs_embeds [B,L,H], position_ids [B,L], attention_mask [B,L], reward_index [B] → hidden [B,H].

    Attention is causal, so the score depends on the last layer only through the `<|Reward|>` row:
    the last layer attends with that one query (keys and values of all tokens) and runs its MLP on
    that row alone. Same math as the reference, a fraction of its last-layer cost.
    """

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
        lm = self.language_model
        length = inputs_embeds.shape[1]
        positions = torch.arange(length, device=inputs_embeds.device)
        causal = positions[None, :] <= positions[:, None]
        mask = causal[None, None] & attention_mask.bool()[:, None, None, :]  # [B,1,L,L]
        cos, sin = lm.rotary_emb(inputs_embeds, position_ids)
        hidden = inputs_embeds
        for layer in lm.layers[:-1]:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=(cos, sin))
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        picked = (rows, reward_index)
        return lm.norm(_reward_row_layer(lm.layers[-1], hidden, mask[rows, :, reward_index], cos, sin, picked))


def _reward_row_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    row_mask: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    picked: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """One Qwen2 decoder layer evaluated only at the rows `picked` (one per sequence) → [B,H].

    `row_mask` [B,1,L] is the attention mask of those rows; keys and values cover all L tokens.
    """
    attn = layer.self_attn
    batch, length, _ = hidden.shape
    normed = layer.input_layernorm(hidden)
    query = attn.q_proj(normed[picked]).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
    key = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    value = attn.v_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    query, _ = apply_rotary_pos_emb(query, query, cos[picked][:, None], sin[picked][:, None])
    _, key = apply_rotary_pos_emb(key, key, cos, sin)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=row_mask[:, :, None, :], scale=attn.scaling, enable_gqa=True
    )
    row = hidden[picked] + attn.o_proj(out.transpose(1, 2).reshape(batch, -1))
    return row + layer.mlp(layer.post_attention_layernorm(row))


class RewardHead(nn.Module):
    """hidden [B,H] → mu [B], sigma [B] (fp32, sigma = exp(log_sigma))."""

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.rm_head = model.rm_head

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = self.rm_head(hidden.float())
        return rewards[:, 0], rewards[:, 1].exp()
