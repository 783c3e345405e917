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

from hpsv3_serve.engines.qwen2_layers import LayerWeights, reward_rows_layer
from hpsv3_serve.inputs import IMAGE_MEAN, IMAGE_STD
from hpsv3_serve.model import HPSv3RewardModel


class VisionEncoder(nn.Module):
    """patches uint8 [1,N,588] + position_ids [1,N,2] (one image) → image_embeds [1, N/4, hidden].

    The uint8 patches (`inputs.patch_pixels`) go straight into the patch embedding, whose weights
    absorb the processor's rescale, CLIP normalisation and frame doubling (`patch_embedding`): the
    same math as the processor's `pixel_values` up to float32 rounding, at one eighth of the bytes
    between the serving steps and half the patch-embedding work. The leading 1
    is the batch dimension Triton's batching models (max_batch_size 1) pass.
    """

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.visual = model.visual

    def patch_embedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [out, 588], bias [out]) acting on raw grey levels, folded in float64.

        The processor feeds (x/255 − mean_c)/std_c, the same frame twice, to a bias-free Conv3d with
        stride = kernel: that is x·(a_c·(w_0 + w_1)) + Σ b_c·(w_0 + w_1) with a_c = 1/(255·std_c),
        b_c = −mean_c/std_c. One Gemm on the uint8 values instead of a table lookup and a doubled frame.
        """
        proj = self.visual.patch_embed.proj.weight  # [out, channel, frame, 14, 14]
        summed = proj.double().sum(dim=2)  # both frames of a still image are equal
        scale = 1 / (255 * torch.tensor(IMAGE_STD, dtype=torch.float64))
        shift = -torch.tensor(IMAGE_MEAN, dtype=torch.float64) / torch.tensor(IMAGE_STD, dtype=torch.float64)
        weight = (summed * scale.view(1, 3, 1, 1)).reshape(proj.shape[0], -1)
        bias = (summed * shift.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        return weight.to(proj.dtype), bias.to(proj.dtype)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        weight, bias = self.patch_embedding()
        hidden = F.linear(patches[0].to(weight.dtype), weight, bias)
        position_ids = position_ids[0]
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

    Rows are right-padded and `reward_index` is each row's last real token (`<|Reward|>`). Attention is causal,
    so the score depends on the last layer only through that row: the last layer runs there alone
    (`qwen2_layers.reward_rows_layer`, the fast engine's own code, on the layer's fused weights). Same math as
    the reference, a fraction of its last-layer cost.
    """

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.language_model = model.language_model
        for name, tensor in zip(LayerWeights._fields, LayerWeights.fuse(model.language_model.layers[-1]), strict=True):
            self.register_buffer(f"last_{name}", tensor.detach(), persistent=False)  # fused once, not per run

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        reward_index: torch.Tensor,
    ) -> torch.Tensor:
        lm = self.language_model
        config = lm.config
        length = inputs_embeds.shape[1]
        positions = torch.arange(length, device=inputs_embeds.device)
        causal = positions[None, :] <= positions[:, None]
        mask = causal[None, None] & attention_mask.bool()[:, None, None, :]  # [B,1,L,L]
        cos, sin = lm.rotary_emb(inputs_embeds, position_ids)
        hidden = inputs_embeds
        for layer in lm.layers[:-1]:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=(cos, sin))
        last = LayerWeights(*(getattr(self, f"last_{name}") for name in LayerWeights._fields))
        heads, kv_heads, eps = config.num_attention_heads, config.num_key_value_heads, config.rms_norm_eps
        return lm.norm(reward_rows_layer(hidden, reward_index, last, cos[:, None], sin[:, None], heads, kv_heads, eps))


class RewardHead(nn.Module):
    """hidden [B,H] → mu [B], sigma [B] (fp32, sigma = exp(log_sigma))."""

    def __init__(self, model: HPSv3RewardModel) -> None:
        super().__init__()
        self.rm_head = model.rm_head

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = self.rm_head(hidden.float())
        return rewards[:, 0], rewards[:, 1].exp()
