"""One scoring interface for every reward model ("judge"): (image, prompt) items in, one scalar score per item out.

A judge has two steps, so in-process scoring and (later) a Triton model per judge share them:

- `prepare(image, prompt)`: CPU work for one item (decode, resize, tokenise), raising `InputError` naming the input;
  thread-safe, so items are prepared in a pool while the previous batch scores.
- `score_batch(items)`: one forward pass over prepared items → one float each.

`JudgeScorer` runs them with the HPSv3 `Scorer`'s rules: inputs as `inputs.open_image` takes them (paths, URLs,
bytes, PIL images, arrays, tensors, within `InputLimits`), results in input order, and a bad item fails alone
with a named error while the rest are scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from ..defaults import DEFAULT_BATCH_SIZE
from ..errors import InputError, PromptError
from ..inputs import ImageInput, describe
from ..limits import InputLimits
from ..pixels import image_items
from ..results import printable, scores_or_raise


class Judge(Protocol):
    """A reward model behind the common interface (see the module docstring)."""

    name: str

    def prepare(self, image: ImageInput, prompt: str) -> Any: ...

    def score_batch(self, items: list[Any]) -> list[float]: ...


@dataclass
class JudgeResult:
    """The score of one (image, prompt) pair by one judge, or why it could not be scored."""

    image: str
    prompt: str
    model: str
    score: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    mu = sigma = log_sigma = None  # HPSv3's alone: code written for its results reads None here

    def to_dict(self) -> dict:
        """JSON form: `score` for a success, `error` instead for a failure."""
        data = {"image": self.image, "prompt": self.prompt, "model": self.model}
        return data | ({"error": self.error} if self.error else {"score": self.score})


def check_text(prompt: object, limits: InputLimits) -> str:
    """The prompt if it is text that UTF-8 carries within `limits.max_prompt_bytes` (judges truncate tokens)."""
    if not isinstance(prompt, str):
        raise PromptError(repr(prompt)[:60], f"a prompt must be text, got {type(prompt).__name__}")
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PromptError(
            repr(prompt[:60]), f"not valid UTF-8 (lone surrogate U+{ord(prompt[exc.start]):04X} at {exc.start})"
        ) from None
    if size > limits.max_prompt_bytes:
        raise PromptError(
            repr(prompt[:60]),
            f"{size} UTF-8 bytes is over the limit of {limits.max_prompt_bytes} (raise it with --max-prompt-bytes)",
        )
    return prompt


class JudgeScorer:
    """Prepares (threads) and scores (the judge) in batches; one bad item never sinks the rest."""

    def __init__(self, judge: Judge, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.judge = judge
        self.name = judge.name
        self.batch_size = max(1, batch_size)
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="judge-prep")

    def close(self) -> None:
        """Stop the preprocessing threads (`with load_judge(...) as scorer:` does it at the end)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> JudgeScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _prepare_safe(self, image: ImageInput, prompt: str) -> Any:
        """The prepared item, or its error as a `str`: whatever one item raises stays with that item."""
        try:
            return self.judge.prepare(image, prompt)
        except InputError as exc:
            return str(exc)
        except Exception as exc:  # a bug or an input nobody foresaw: still this item's error only
            return f"{describe(image)}: could not be prepared ({type(exc).__name__}: {exc})"

    def _score_prepared(self, items: list[Any]) -> list[float | str]:
        """Scores of a batch; if the batch fails, each item alone, so only the item that fails gets an error."""
        try:
            return [float(score) for score in self.judge.score_batch(items)]
        except Exception as exc:
            if len(items) == 1:
                return [f"scoring failed: {type(exc).__name__}: {exc}"]
            return [out for item in items for out in self._score_prepared([item])]

    def iter_score(self, images: Sequence[ImageInput], prompts: str | Sequence[str]) -> Iterator[JudgeResult]:
        """Yield results in input order, batch by batch, preparing the next batch while scoring. `images`: a list,
        one image, or a batch array / tensor [B, ...] (`pixels.image_items`)."""
        images = image_items(images)
        prompt_list = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompt_list)} prompts")

        def submit(start: int) -> list[Future]:
            chunk = range(start, min(start + self.batch_size, len(images)))
            return [self._pool.submit(self._prepare_safe, images[i], prompt_list[i]) for i in chunk]

        pending = submit(0) if images else []
        for start in range(0, len(images), self.batch_size):
            prepared = [future.result() for future in pending]
            pending = submit(start + self.batch_size) if start + self.batch_size < len(images) else []
            good = [item for item in prepared if not isinstance(item, str)]
            scores = iter(self._score_prepared(good) if good else [])
            for offset, item in enumerate(prepared):
                index = start + offset
                outcome = item if isinstance(item, str) else next(scores)
                result = JudgeResult(describe(images[index]), printable(prompt_list[index]), self.name)
                if isinstance(outcome, str):
                    result.error = outcome
                else:
                    result.score = outcome
                yield result

    def score(self, images: Sequence[ImageInput], prompts: str | Sequence[str]) -> list[JudgeResult]:
        """Score every pair; failed items carry `error` and no score."""
        return list(self.iter_score(images, prompts))

    def __call__(self, images: Sequence[ImageInput], prompts: str | Sequence[str]) -> list[float]:
        """The score per pair; raises if any item failed."""
        return scores_or_raise(self.score(images, prompts))
