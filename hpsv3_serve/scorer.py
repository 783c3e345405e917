"""In-process scoring: `Scorer.score(images, prompts)` → one result per item, errors per item."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import engines
from .batching import PreparedItem, collate
from .checkpoint import resolve_base, resolve_checkpoint
from .defaults import DEFAULT_BASE, DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT
from .engines.base import Engine
from .errors import InputError
from .inputs import ImageInput, describe, prepare_image
from .limits import DEFAULT_LIMITS, InputLimits
from .pixels import image_items
from .prompt import PromptTokenizer, check_prompt
from .results import ScoreResult, printable, scores_or_raise


class Scorer:
    """Preprocesses (threads) and scores (engine) in batches; one bad item never sinks the rest.

    `with Scorer.from_pretrained(...) as scorer:` closes the threads and the engine (vLLM's process) at the end."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: PromptTokenizer,
        batch_size: int = DEFAULT_BATCH_SIZE,
        limits: InputLimits = DEFAULT_LIMITS,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="hpsv3-prep")

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT,
        base: str | os.PathLike = DEFAULT_BASE,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = DEFAULT_BATCH_SIZE,
        limits: InputLimits = DEFAULT_LIMITS,
        backend: str | None = None,
        **engine_options: Any,
    ) -> Scorer:
        """Load from local paths or hub ids (defaults: MizzenAI/HPSv3 on Qwen/Qwen2-VL-7B-Instruct) on `backend`
        (`engines.BACKENDS`; default: fast on CUDA, torch on CPU). `engine_options` go to `engines.load`: the
        exported `folder` of the onnx and vllm backends, the fast engine's `compile_layers` and `cuda_graphs`."""
        base_dir = resolve_base(os.fspath(base))
        backend = backend or engines.default_backend(device)
        if backend not in engines.EXPORTED:
            engine_options["checkpoint"] = resolve_checkpoint(os.fspath(checkpoint))
        engine = engines.load(backend, base=base_dir, device=device, dtype=dtype, **engine_options)
        return cls(engine, PromptTokenizer.from_base(base_dir, limits), batch_size, limits)

    def close(self) -> None:
        """Stop the preprocessing threads and the engine (vLLM's process, CUDA graphs)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prepare(self, image: ImageInput, prompt: str) -> PreparedItem:
        """Load, resize, patchify and tokenise one pair (raises `InputError` naming the input)."""
        check_prompt(prompt)
        prepared = prepare_image(image, self.limits)
        return PreparedItem(self.tokenizer.encode_one(prompt, prepared.num_tokens), prepared)

    def _prepare_safe(self, image: ImageInput, prompt: str) -> PreparedItem | str:
        """The prepared item, or its error: whatever one item raises stays with that item."""
        try:
            return self.prepare(image, prompt)
        except InputError as exc:
            return str(exc)
        except Exception as exc:  # a bug or an input nobody foresaw: still this item's error only
            return f"{describe(image)}: could not be prepared ({type(exc).__name__}: {exc})"

    def _score_prepared(self, items: list[PreparedItem]) -> list[tuple[float, float] | str]:
        """Scores of a batch; if the batch fails, each item alone, so only the item that fails gets an error."""
        try:
            return [(float(mu), float(log_sigma)) for mu, log_sigma in self.engine.score(collate(items))]
        except Exception as exc:
            if len(items) == 1:
                return [f"scoring failed: {type(exc).__name__}: {exc}"]
            return [out for item in items for out in self._score_prepared([item])]

    def iter_score(self, images: Sequence[ImageInput], prompts: str | Sequence[str]) -> Iterator[ScoreResult]:
        """Yield results in input order, batch by batch, preparing the next batch while scoring. `images`: a list of
        images, or one image, or a batch array / tensor [B, ...] (`pixels.image_items`)."""
        images = image_items(images)
        prompt_list = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompt_list)} prompts")
        starts = range(0, len(images), self.batch_size)

        def submit(start: int) -> list[Future]:
            chunk = range(start, min(start + self.batch_size, len(images)))
            return [self._pool.submit(self._prepare_safe, images[i], prompt_list[i]) for i in chunk]

        pending = submit(0) if images else []
        for start in starts:
            prepared = [future.result() for future in pending]
            pending = submit(start + self.batch_size) if start + self.batch_size < len(images) else []
            good = [item for item in prepared if isinstance(item, PreparedItem)]
            scores = iter(self._score_prepared(good) if good else [])
            for offset, item in enumerate(prepared):
                index = start + offset
                result = ScoreResult(image=describe(images[index]), prompt=printable(prompt_list[index]))
                outcome = next(scores) if isinstance(item, PreparedItem) else item
                if isinstance(outcome, str):
                    result.error = outcome
                else:
                    result.mu, result.log_sigma = outcome
                    result.sigma = math.exp(outcome[1])
                yield result

    def score(self, images: Sequence[ImageInput], prompts: str | Sequence[str]) -> list[ScoreResult]:
        """Score every pair; failed items carry `error` and no scores."""
        return list(self.iter_score(images, prompts))

    def __call__(self, images: Sequence[ImageInput], prompts: str | Sequence[str]) -> list[float]:
        """mu per pair (the score people quote); raises if any item failed."""
        return scores_or_raise(self.score(images, prompts))
