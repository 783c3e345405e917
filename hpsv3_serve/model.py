"""The HPSv3 reward model on current transformers: vision tower, 1-D-position language tower, rm_head.

The official forward calls the inner Qwen2-VL model with `position_ids=None`, so every token gets
position 0..L-1 on all three M-RoPE axes: exactly ordinary 1-D RoPE. The language tower is therefore
built as a plain `Qwen2Model` fed with `inputs_embeds`; M-RoPE cannot creep in.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2VLConfig
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VisionTransformerPretrainedModel,
    Qwen2VLVisionRotaryEmbedding,
)

from .prompt import IMAGE_PAD_TOKEN_ID, VOCAB_ROWS

RM_HEAD_HIDDEN = (1024, 16)
RM_HEAD_DROPOUT = 0.05


def language_config(config: Qwen2VLConfig, vocab_rows: int = VOCAB_ROWS) -> Qwen2Config:
    """A plain Qwen2 decoder config (1-D RoPE) equal to Qwen2-VL's text tower with 1-D positions."""
    text = config.text_config
    return Qwen2Config(
        vocab_size=vocab_rows,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=text.num_hidden_layers,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        hidden_act=text.hidden_act,
        max_position_embeddings=text.max_position_embeddings,
        rms_norm_eps=text.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": text.rope_parameters["rope_theta"]},
        attention_dropout=text.attention_dropout,
        use_sliding_window=False,
        tie_word_embeddings=False,
        use_cache=False,
    )


def build_rm_head(hidden_size: int) -> nn.Sequential:
    """Linear(H,1024) → ReLU → Dropout(0.05) → Linear(1024,16) → ReLU → Linear(16,2): keys rm_head.{0,3,5}."""
    first, second = RM_HEAD_HIDDEN
    return nn.Sequential(
        nn.Linear(hidden_size, first),
        nn.ReLU(),
        nn.Dropout(RM_HEAD_DROPOUT),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Linear(second, 2),
    )


class HPSv3RewardModel(nn.Module):
    """Image + prompt tokens → `[mu, log_sigma]` read at the `<|Reward|>` position (rm_head in fp32)."""

    def __init__(self, config: Qwen2VLConfig, vocab_rows: int = VOCAB_ROWS) -> None:
        super().__init__()
        self.config = config
        self.visual = Qwen2VisionTransformerPretrainedModel._from_config(config.vision_config)
        self.language_model = Qwen2Model(language_config(config, vocab_rows))
        self.rm_head = build_rm_head(config.text_config.hidden_size)

    def rebuild_rotary_buffers(self, device: torch.device | str = "cpu") -> None:
        """Recreate the non-persistent rotary tables (after building on the meta device)."""
        self.visual.rotary_pos_emb = Qwen2VLVisionRotaryEmbedding(self.config.vision_config).to(device)
        self.language_model.rotary_emb = Qwen2RotaryEmbedding(self.language_model.config).to(device)

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Vision tower + merger: [sum(h·w/4), hidden]. Attention stays within each image."""
        pixel_values = pixel_values.to(self.visual.get_dtype())
        return self.visual(pixel_values, grid_thw=grid_thw).pooler_output

    def embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Token embeddings with image features scattered into the `<|image_pad|>` slots."""
        inputs_embeds = self.language_model.embed_tokens(input_ids)
        mask = (input_ids == IMAGE_PAD_TOKEN_ID).unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_embeds.to(inputs_embeds.dtype))

    def reward_hidden(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, reward_index: torch.Tensor
    ) -> torch.Tensor:
        """Language tower (positions 0..L-1) → final-norm hidden at `reward_index`, `[B, H]`."""
        hidden = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), reward_index]

    def reward_from_embeds(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, reward_index: torch.Tensor
    ) -> torch.Tensor:
        """`reward_hidden` → rm_head in fp32: `[B, 2]` mu and log_sigma."""
        return self.rm_head(self.reward_hidden(inputs_embeds, attention_mask, reward_index).float())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        reward_index: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
    ) -> torch.Tensor:
        """`[B, 2]` float32: mu and log_sigma for each right-padded sequence."""
        image_embeds = self.encode_images(pixel_values, image_grid_thw)
        inputs_embeds = self.embed(input_ids, image_embeds)
        return self.reward_from_embeds(inputs_embeds, attention_mask, reward_index)
