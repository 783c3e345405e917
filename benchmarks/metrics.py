"""The numbers: pair outcomes with ties apart, the Wilson score interval, per-category score statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
CI_METHOD = "Wilson score interval, 95 %, pairs taken as independent"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None without trials."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PairCounts:
    """How the model ordered the pairs people decided: agreeing, disagreeing, or tied (|Δmu| ≤ tolerance)."""

    correct: int = 0
    wrong: int = 0
    model_ties: int = 0

    def add(self, mu_chosen: float, mu_rejected: float, tolerance: float) -> None:
        if abs(mu_chosen - mu_rejected) <= tolerance:
            self.model_ties += 1
        elif mu_chosen > mu_rejected:
            self.correct += 1
        else:
            self.wrong += 1

    @property
    def pairs(self) -> int:
        return self.correct + self.wrong + self.model_ties

    def summary(self) -> dict:
        """Counts, accuracy (a model tie is not correct, as in the official evaluation), its Wilson 95 % interval,
        and the accuracy over the pairs the model did not tie."""
        decided = self.correct + self.wrong
        interval = wilson(self.correct, self.pairs)
        return {
            "pairs": self.pairs,
            "correct": self.correct,
            "wrong": self.wrong,
            "model_ties": self.model_ties,
            "accuracy": self.correct / self.pairs if self.pairs else None,
            "ci95": list(interval) if interval else None,
            "accuracy_without_model_ties": self.correct / decided if decided else None,
        }


def score_stats(values: list[float]) -> dict:
    """count, mean, std (population, as the official benchmark), min, max of a category's mu."""
    array = np.asarray(values, dtype=np.float64)
    return {
        "count": int(array.size),
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def overall_stats(categories: dict[str, dict]) -> dict:
    """The official OVERALL row: mean and std of the category means, min of the minima, max of the maxima."""
    means = np.asarray([c["mean"] for c in categories.values()], dtype=np.float64)
    return {
        "count": sum(c["count"] for c in categories.values()),
        "mean": float(means.mean()),
        "std": float(means.std()),
        "min": min(c["min"] for c in categories.values()),
        "max": max(c["max"] for c in categories.values()),
    }
