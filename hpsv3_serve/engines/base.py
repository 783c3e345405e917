"""The engine interface that the in-process scorer and the server's models share."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..batching import Batch


class Engine(Protocol):
    """Scores prepared batches. Implementations: torch (reference), fast (torch, lean), onnxruntime, vllm;
    `engines.load` builds each."""

    name: str

    def score(self, batch: Batch) -> np.ndarray:
        """float32 `[B, 2]`: mu and log_sigma for each item of the batch."""
        ...

    def close(self) -> None:
        """Release what the engine holds beyond memory (processes, threads, graphs); a no-op where nothing."""
        ...
