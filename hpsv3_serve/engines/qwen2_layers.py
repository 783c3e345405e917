"""Qwen2 decoder math over fused weights, shared by the fast engine and the ONNX export (`export/modules.py`).

Sequences are right-padded and end at `<|Reward|>`, so plain causal attention is exact for every real token,
and the score depends on the last layer only through the `<|Reward|>` row: `reward_rows_layer` runs that layer
for those rows alone (one query per sequence, keys and values of all tokens up to it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2RMSNorm: in float32, then back to the input dtype before the weight."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE with the half-rotation layout Qwen2 uses."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class LayerWeights(NamedTuple):
    """One decoder layer's weights, QKV and gate/up fused (a tuple of tensors: one compiled graph serves all
    layers)."""

    ln1: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor
    out: torch.Tensor
    ln2: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor

    @classmethod
    def fuse(cls, layer: nn.Module) -> LayerWeights:
        attn, mlp = layer.self_attn, layer.mlp
        return cls(
            ln1=layer.input_layernorm.weight,
            qkv=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
            qkv_bias=torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
            out=attn.o_proj.weight,
            ln2=layer.post_attention_layernorm.weight,
            gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
            down=mlp.down_proj.weight,
        )


def _repeat_kv(t: torch.Tensor, heads: int) -> torch.Tensor:
    """KV heads repeated to the query heads (every SDPA backend and exporter takes it)."""
    return t.repeat_interleave(heads // t.shape[1], dim=1)


def attention_inputs(
    x: torch.Tensor, w: LayerWeights, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Norm, fused QKV and RoPE: q, k, v `[B, heads, L, d]`."""
    rows, length, hidden = x.shape
    head_dim = hidden // heads
    qkv = F.linear(rms_norm(x, w.ln1, eps), w.qkv, w.qkv_bias).view(rows, length, heads + 2 * kv_heads, head_dim)
    q, k, v = qkv.transpose(1, 2).split([heads, kv_heads, kv_heads], dim=1)
    return rotate(q, cos, sin), _repeat_kv(rotate(k, cos, sin), heads), _repeat_kv(v, heads)


def mlp(x: torch.Tensor, w: LayerWeights, eps: float) -> torch.Tensor:
    """x + SwiGLU(norm(x)) with the fused gate/up matrix."""
    gate, up = F.linear(rms_norm(x, w.ln2, eps), w.gate_up).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, w.down)


def decoder_layer(
    x: torch.Tensor, w: LayerWeights, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int, eps: float
) -> torch.Tensor:
    """A Qwen2 decoder layer over right-padded rows with causal attention only; cos, sin `[1 or B, 1, L, d]`."""
    rows, length, hidden = x.shape
    q, k, v = attention_inputs(x, w, cos, sin, heads, kv_heads, eps)
    attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + F.linear(attended.transpose(1, 2).reshape(rows, length, hidden), w.out)
    return mlp(x, w, eps)


def reward_rows_layer(
    x: torch.Tensor,
    reward_index: torch.Tensor,
    w: LayerWeights,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    kv_heads: int,
    eps: float,
) -> torch.Tensor:
    """A decoder layer evaluated at the `<|Reward|>` row of each sequence only: `[B, hidden]`.

    The query is computed for that row alone; keys and values cover the tokens up to it (right padding: all
    real). cos, sin `[1 or B, 1, L, d]`."""
    rows, length, hidden = x.shape
    head_dim = hidden // heads
    picked = (torch.arange(rows, device=x.device), reward_index)
    normed = rms_norm(x, w.ln1, eps)
    (q_weight, kv_weight), (q_bias, kv_bias) = (t.split([hidden, t.shape[0] - hidden]) for t in (w.qkv, w.qkv_bias))
    row_cos, row_sin = (t.expand(rows, -1, -1, -1)[picked[0], :, reward_index].unsqueeze(1) for t in (cos, sin))
    q = rotate(F.linear(normed[picked], q_weight, q_bias).view(rows, heads, 1, head_dim), row_cos, row_sin)
    kv = F.linear(normed, kv_weight, kv_bias).view(rows, length, 2 * kv_heads, head_dim).transpose(1, 2)
    k, v = kv.split([kv_heads, kv_heads], dim=1)
    k, v = _repeat_kv(rotate(k, cos, sin), heads), _repeat_kv(v, heads)
    visible = torch.arange(length, device=x.device).view(1, 1, 1, length) <= reward_index.view(rows, 1, 1, 1)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
    return mlp(x[picked] + F.linear(attended.reshape(rows, hidden), w.out), w, eps)
