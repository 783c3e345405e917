"""The official forward, on our modules: how `hpsv3==1.0.0`'s inferencer runs a batch.

Its `HPSv3RewardInferencer.reward` (transformers 4.45.2, `attn_implementation="sdpa"` unless the optional
flash-attn is installed) sends float32 `pixel_values` normalised on the host, runs the vision tower
with 4.45's `VisionSdpaAttention` (one boolean mask over all the batch's patches, so attention costs
(Σ patches)² and the mask is built with one host sync per image), pads the whole chat rendering (the
tail after `<|Reward|>` included) to the longest sequence with an attention mask, applies the fp32
rm_head to every position and then picks the `<|Reward|>` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

from hpsv3_serve.batching import Batch
from hpsv3_serve.model import HPSv3RewardModel
from hpsv3_serve.prompt import IMAGE_PAD_TOKEN_ID, REWARD_TOKEN_ID


def batchwide_attention(
    attn: torch.nn.Module,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    **_: object,
) -> torch.Tensor:
    """transformers 4.45's `VisionSdpaAttention.forward`: a `[1, N, N]` mask over every patch of the batch."""
    length = hidden_states.shape[0]
    q, k, v = attn.qkv(hidden_states).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)
    mask = torch.zeros([1, length, length], device=q.device, dtype=torch.bool)
    for i in range(1, len(cu_seqlens)):
        mask[..., cu_seqlens[i - 1] : cu_seqlens[i], cu_seqlens[i - 1] : cu_seqlens[i]] = True
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), mask)
    return attn.proj(out.transpose(0, 1).reshape(length, -1))


@contextmanager
def batchwide_vision(model: HPSv3RewardModel) -> Iterator[None]:
    """Swap the vision blocks' attention for the batch-wide-mask version while the block runs."""
    for block in model.visual.blocks:
        block.attn.forward = partial(batchwide_attention, block.attn)
    try:
        yield
    finally:
        for block in model.visual.blocks:
            del block.attn.forward


def official_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """What the official processor hands over, on the host: ids, mask, float32 pixel values, grids."""
    return {
        "input_ids": torch.from_numpy(batch.input_ids),
        "attention_mask": torch.from_numpy(batch.attention_mask),
        "pixel_values": torch.from_numpy(batch.pixel_values),
        "image_grid_thw": torch.from_numpy(batch.image_grid_thw),
    }


@torch.inference_mode()
def official_forward(model: HPSv3RewardModel, inputs: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """`[B, 2]` float32 mu and log_sigma on the device: `.to(device)` of every input, then the official forward."""
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    input_ids = inputs["input_ids"]
    with batchwide_vision(model):
        pixel_values = inputs["pixel_values"].type(model.visual.get_dtype())
        image_embeds = model.visual(pixel_values, grid_thw=inputs["image_grid_thw"]).pooler_output
    inputs_embeds = model.language_model.embed_tokens(input_ids)
    image_mask = (input_ids == IMAGE_PAD_TOKEN_ID).unsqueeze(-1).expand_as(inputs_embeds)
    inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_embeds.to(inputs_embeds.dtype))
    hidden = model.language_model(inputs_embeds=inputs_embeds, attention_mask=inputs["attention_mask"])
    logits = model.rm_head(hidden.last_hidden_state.float())  # every position in fp32, as the official does
    return logits[input_ids == REWARD_TOKEN_ID].view(input_ids.shape[0], -1)
