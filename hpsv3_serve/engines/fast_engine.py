"""The fast torch engine (`--backend fast`, what `--device cuda` uses): an `HPSv3RewardModel`'s weights, run lean.

- Vision: patches travel as uint8 and are normalised on the device; attention stays within each image,
  one batched SDPA call (flash on the GPU) per run of equal-size images, never a batch-wide mask.
- Language: sequences end at `<|Reward|>` and are right-padded, so plain causal attention (no mask) is
  exact for every real token; fused QKV and gate/up matrices; the last layer runs only the reward rows
  (`qwen2_layers`, the same code the ONNX export traces).
- Optional `torch.compile` of the decoder layer and CUDA graphs of the whole language tower per
  (graph batch size, padded length): batches are padded with zero rows to 1, 2, 4, 8 or a multiple of 8,
  so a server's dynamic batches replay a few graphs, captured at load by `FastEngine.warm_up`. No host
  syncs: the CPU runs ahead while the GPU works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from ..batching import Batch
from ..inputs import FACTOR, NORMALISED, PIXELS, TEMPORAL_PATCH_SIZE, vision_position_ids
from ..model import HPSv3RewardModel
from ..prompt import IMAGE_PAD_TOKEN_ID, PAD_TOKEN_ID, PromptTokenizer
from .qwen2_layers import LayerWeights, decoder_layer, reward_rows_layer, rms_norm, rotate

LENGTH_BUCKET = 32  # sequences are padded to a multiple of this: few shapes to capture (780–870 → 4)


@dataclass(frozen=True)
class DeviceBatch:
    """A `Batch` on the device, with the host-side bookkeeping done once."""

    patches: torch.Tensor  # uint8 [N, 588]
    vision_positions: torch.Tensor  # int64 [N, 2]
    runs: tuple[tuple[int, int], ...]  # (images, patches per image) runs of equal-size images, in order
    input_ids: torch.Tensor  # int64 [B, L], L a multiple of LENGTH_BUCKET
    image_slots: torch.Tensor  # int64 [image tokens]: flat positions of the `<|image_pad|>` ids
    reward_index: torch.Tensor  # int64 [B]


def image_runs(grid_thw: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Consecutive images of equal patch count, as (count, patches) pairs."""
    runs: list[list[int]] = []
    for patches in (int(t * h * w) for t, h, w in grid_thw):
        if runs and runs[-1][1] == patches:
            runs[-1][0] += 1
        else:
            runs.append([1, patches])
    return tuple((count, patches) for count, patches in runs)


def to_device(batch: Batch, device: torch.device, bucket: int = LENGTH_BUCKET) -> DeviceBatch:
    """Pad ids to the length bucket, index the image slots and copy everything (pinned, non-blocking)."""
    rows, length = batch.input_ids.shape
    padded = np.full((rows, -(-length // bucket) * bucket), PAD_TOKEN_ID, np.int64)
    padded[:, :length] = batch.input_ids
    positions = np.concatenate([vision_position_ids(tuple(grid)) for grid in batch.image_grid_thw])

    def send(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)

    return DeviceBatch(
        patches=send(batch.patches),
        vision_positions=send(positions),
        runs=image_runs(batch.image_grid_thw),
        input_ids=send(padded),
        image_slots=send(np.flatnonzero(padded == IMAGE_PAD_TOKEN_ID)),
        reward_index=send(batch.reward_index),
    )


def share_fused(layer: nn.Module, w: LayerWeights) -> None:
    """Point the layer's own q/k/v and gate/up weights at views of the fused tensors: the weights stay in memory
    once, and the model's modules (the reference forward) still run."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = (
        ((attn.q_proj, attn.k_proj, attn.v_proj), w.qkv, w.qkv_bias),
        ((mlp.gate_proj, mlp.up_proj), w.gate_up, None),
    )
    for modules, weight, bias in groups:
        start = 0
        for module in modules:
            rows = module.weight.shape[0]
            module.weight.data = weight[start : start + rows]
            if bias is not None:
                module.bias.data = bias[start : start + rows]
            start += rows


class BlockWeights(NamedTuple):
    """One vision block's tensors (a tuple: one compiled graph serves all 32 blocks)."""

    norm1: tuple[torch.Tensor, torch.Tensor]
    qkv: tuple[torch.Tensor, torch.Tensor]
    proj: tuple[torch.Tensor, torch.Tensor]
    norm2: tuple[torch.Tensor, torch.Tensor]
    fc1: tuple[torch.Tensor, torch.Tensor]
    fc2: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def of(cls, block: nn.Module) -> BlockWeights:
        def pair(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
            return module.weight, module.bias

        attn, mlp = block.attn, block.mlp
        return cls(pair(block.norm1), pair(attn.qkv), pair(attn.proj), pair(block.norm2), pair(mlp.fc1), pair(mlp.fc2))


def vision_qkv(
    x: torch.Tensor, w: BlockWeights, cos: torch.Tensor, sin: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm, QKV and the 2-D RoPE (in float32, as transformers does): `[N, heads, d]` each."""
    h = F.layer_norm(x, x.shape[-1:], *w.norm1, eps=1e-6)
    q, k, v = F.linear(h, *w.qkv).view(x.shape[0], 3, heads, -1).unbind(1)
    return rotate(q.float(), cos, sin).to(x.dtype), rotate(k.float(), cos, sin).to(x.dtype), v


def vision_out(x: torch.Tensor, attended: torch.Tensor, w: BlockWeights, act: nn.Module) -> torch.Tensor:
    """Output projection and the MLP, each with its residual."""
    x = x + F.linear(attended, *w.proj)
    return x + F.linear(act(F.linear(F.layer_norm(x, x.shape[-1:], *w.norm2, eps=1e-6), *w.fc1)), *w.fc2)


def per_image_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, runs: tuple[tuple[int, int], ...]
) -> torch.Tensor:
    """Attention within each image: one batched SDPA call per run of equal-size images, `[N, heads·d]`."""
    outputs, start = [], 0
    for count, patches in runs:
        end = start + count * patches
        per_image = [t[start:end].view(count, patches, t.shape[1], -1).transpose(1, 2) for t in (q, k, v)]
        outputs.append(F.scaled_dot_product_attention(*per_image).transpose(1, 2).reshape(end - start, -1))
        start = end
    return torch.cat(outputs)


def graph_rows(count: int) -> int:
    """The batch size a CUDA graph is captured for: 1, 2, 4, 8, then multiples of 8."""
    if count <= 8:
        return 1 << (count - 1).bit_length()
    return -(-count // 8) * 8


def served_lengths(tokenizer: PromptTokenizer, prompt_tokens: int = 96) -> list[int]:
    """Sequence lengths of served requests to capture graphs for: an image at the served pixel count with
    prompts of 0 to `prompt_tokens` tokens (longer ones get their graph when first seen)."""
    shortest = len(tokenizer.encode_one("", PIXELS // FACTOR**2))
    return list(range(shortest, shortest + prompt_tokens + 1, LENGTH_BUCKET))


class FastHPSv3:
    """The fast forward over an `HPSv3RewardModel`'s weights (the model's own modules stay usable)."""

    def __init__(self, model: HPSv3RewardModel, compile_layers: bool = False, cuda_graphs: bool = False) -> None:
        self.model = model
        self.device = model.language_model.embed_tokens.weight.device
        text = model.language_model.config
        self.heads, self.kv_heads, self.eps = text.num_attention_heads, text.num_key_value_heads, text.rms_norm_eps
        with torch.no_grad():
            self.layers = [LayerWeights.fuse(layer) for layer in model.language_model.layers]
            for layer, weights in zip(model.language_model.layers, self.layers, strict=True):
                share_fused(layer, weights)
        heads, kv_heads, eps = self.heads, self.kv_heads, self.eps

        def layer(x: torch.Tensor, w: LayerWeights, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            return decoder_layer(x, w, cos, sin, heads, kv_heads, eps)

        self.eager_layer = layer
        self.layer_fn = self.eager_layer
        vision = model.visual.config
        self.blocks = [BlockWeights.of(block) for block in model.visual.blocks]
        act = ACT2FN[vision.hidden_act]
        self.eager_vision = (
            partial(vision_qkv, heads=vision.num_heads),
            partial(vision_out, act=act),
        )
        self.qkv_fn, self.out_fn = self.eager_vision
        if compile_layers:  # sizes stay constants; batch and length are symbolic: one graph for every shape
            self.layer_fn = torch.compile(self.eager_layer, dynamic=True)
            self.qkv_fn, self.out_fn = (torch.compile(fn, dynamic=True) for fn in self.eager_vision)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self.table = torch.from_numpy(NORMALISED).to(self.device).view(-1)

    def pixel_values(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 patches → the processor's normalised values, frame repeated: `[N, 1176]` in the vision dtype."""
        count = patches.shape[0]
        offsets = torch.arange(0, 3 * 256, 256, device=patches.device).view(1, 3, 1)
        values = self.table[patches.view(count, 3, -1).long() + offsets]
        frames = values.unsqueeze(2).expand(count, 3, TEMPORAL_PATCH_SIZE, values.shape[-1])
        return frames.reshape(count, -1).to(self.model.visual.get_dtype())

    def vision(self, batch: DeviceBatch) -> torch.Tensor:
        """Vision tower + merger with per-image attention: `[image tokens, hidden]`."""
        visual = self.model.visual
        proj = visual.patch_embed.proj.weight
        x = F.linear(self.pixel_values(batch.patches), proj.view(proj.shape[0], -1))
        cos, sin = visual.rotary_pos_emb(x, batch.vision_positions)
        cos, sin = cos.unsqueeze(1).float(), sin.unsqueeze(1).float()
        for weights in self.blocks:
            q, k, v = self.qkv_fn(x, weights, cos, sin)
            x = self.out_fn(x, per_image_attention(q, k, v, batch.runs), weights)
        return visual.merger(x)

    def rope(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """1-D RoPE tables for positions 0..L−1, `[1, 1, L, d]` each."""
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        cos, sin = self.model.language_model.rotary_emb(x, positions)
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def language(self, embeds: torch.Tensor, reward_index: torch.Tensor) -> torch.Tensor:
        """Decoder layers → final norm at `<|Reward|>` → fp32 rm_head: `[B, 2]`."""
        cos, sin = self.rope(embeds)
        x = embeds
        for weights in self.layers[:-1]:
            x = self.layer_fn(x, weights, cos, sin)
        x = reward_rows_layer(x, reward_index, self.layers[-1], cos, sin, self.heads, self.kv_heads, self.eps)
        norm = self.model.language_model.norm
        return self.model.rm_head(rms_norm(x, norm.weight, self.eps).float())

    def capture(self, rows: int, length: int) -> None:
        """Capture the language tower's graph for `[rows, length]` inputs (zeros), unless there is one."""
        if (rows, length) in self.graphs:
            return
        hidden = self.model.language_model.embed_tokens.weight
        static_embeds = hidden.new_zeros(rows, length, hidden.shape[1])
        static_index = torch.zeros(rows, dtype=torch.long, device=self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (compilation, cuBLAS workspaces)
                self.language(static_embeds, static_index)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.language(static_embeds, static_index)
        self.graphs[(rows, length)] = (graph, static_embeds, static_index, static_out)

    def graphed_language(self, embeds: torch.Tensor, reward_index: torch.Tensor) -> torch.Tensor:
        """`language` replayed from the CUDA graph of the batch's (graph rows, length): the batch is padded
        with zero rows up to `graph_rows` (few graphs for dynamic batches), their outputs dropped."""
        count, length = embeds.shape[:2]
        rows = graph_rows(count)
        self.capture(rows, length)
        graph, static_embeds, static_index, static_out = self.graphs[(rows, length)]
        static_embeds[:count].copy_(embeds)
        static_embeds[count:].zero_()
        static_index[:count].copy_(reward_index)
        static_index[count:].zero_()
        graph.replay()
        return static_out[:count].clone()

    @torch.inference_mode()
    def __call__(self, batch: DeviceBatch) -> torch.Tensor:
        """`[B, 2]` float32 mu and log_sigma, left on the device (no host sync)."""
        embeds = self.model.language_model.embed_tokens(batch.input_ids)
        image_embeds = self.vision(batch).to(embeds.dtype)
        embeds = embeds.view(-1, embeds.shape[-1]).index_copy(0, batch.image_slots, image_embeds).view_as(embeds)
        language = self.graphed_language if self.cuda_graphs else self.language
        return language(embeds, batch.reward_index)


class FastEngine:
    """`Engine` on `FastHPSv3`. A failure of torch.compile or of graph capture on an unseen stack drops that
    option and runs the batch again (each drop is kept in `fallbacks`); out-of-memory is raised as is."""

    name = "fast"

    def __init__(self, model: HPSv3RewardModel, compile_layers: bool = False, cuda_graphs: bool = False) -> None:
        self.fast = FastHPSv3(model.eval(), compile_layers=compile_layers, cuda_graphs=cuda_graphs)
        self.compiled = compile_layers
        self.fallbacks: list[str] = []

    @property
    def options(self) -> dict[str, bool]:
        """What runs now: torch.compile and CUDA graphs, each on or off."""
        return {"compile": self.compiled, "cuda_graphs": self.fast.cuda_graphs}

    def forward(self, batch: Batch) -> torch.Tensor:
        """`[B, 2]` float32 mu and log_sigma, left on the device (no host sync)."""
        while True:
            try:
                return self.fast(to_device(batch, self.fast.device))
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:
                self._fall_back(exc)

    def score(self, batch: Batch) -> np.ndarray:
        return self.forward(batch).float().cpu().numpy()

    def warm_up(self, max_batch: int, lengths: Sequence[int]) -> int:
        """Capture the CUDA graphs a server will replay: every graph batch size up to `max_batch` at each of
        `lengths` (token counts, rounded up to the length bucket), before the first request pays for one.
        Returns how many graphs there are (0 without CUDA graphs)."""
        if not self.fast.cuda_graphs:
            return 0
        buckets = sorted({-(-length // LENGTH_BUCKET) * LENGTH_BUCKET for length in lengths})
        sizes = sorted({graph_rows(count) for count in range(1, max_batch + 1)})
        with torch.inference_mode():
            for length in buckets:
                for rows in sizes:
                    try:
                        self.fast.capture(rows, length)
                    except torch.OutOfMemoryError:
                        raise
                    except Exception as exc:
                        self._fall_back(exc)
                        return 0
        return len(self.fast.graphs)

    def close(self) -> None:
        """Drop the captured graphs (their memory pool goes with them)."""
        self.fast.graphs.clear()

    def _fall_back(self, exc: Exception) -> None:
        """Drop torch.compile, then CUDA graphs; with neither left, the error is the caller's."""
        fast = self.fast
        if self.compiled:
            fast.layer_fn, (fast.qkv_fn, fast.out_fn), self.compiled = fast.eager_layer, fast.eager_vision, False
        elif fast.cuda_graphs:
            fast.cuda_graphs = False
        else:
            raise exc
        fast.graphs.clear()
        self.fallbacks.append(f"fell back to {self.options} after {type(exc).__name__}: {exc}"[:500])
