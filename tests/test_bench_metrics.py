"""benchmarks/metrics.py: the Wilson interval against published values, pair counting, the official OVERALL row."""

from __future__ import annotations

import pytest

from hpsv3_benchmarks.metrics import PairCounts, overall_stats, score_stats, wilson


def test_wilson_matches_reference_values() -> None:
    # statsmodels proportion_confint(count, nobs, method="wilson") gives these
    assert wilson(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    assert wilson(0, 0) is None


def test_pair_counts_keep_model_ties_apart() -> None:
    counts = PairCounts()
    for chosen, rejected in [(2.0, 1.0), (1.0, 2.0), (1.5, 1.5), (3.0, 0.0)]:
        counts.add(chosen, rejected, tolerance=0.0)
    summary = counts.summary()
    assert (summary["correct"], summary["wrong"], summary["model_ties"], summary["pairs"]) == (2, 1, 1, 4)
    assert summary["accuracy"] == 0.5, "a model tie is not correct (the official rule)"
    assert summary["accuracy_without_model_ties"] == pytest.approx(2 / 3)
    assert summary["ci95"] == list(wilson(2, 4))
    tolerant = PairCounts()
    tolerant.add(1.0, 0.95, tolerance=0.1)
    assert tolerant.model_ties == 1


def test_overall_is_the_mean_of_category_means() -> None:
    categories = {"a": score_stats([1.0, 2.0, 3.0]), "b": score_stats([10.0])}
    std = pytest.approx(0.816497, abs=1e-6)  # population std, as numpy's default and the official script
    assert categories["a"] == {"count": 3, "mean": 2.0, "std": std, "min": 1.0, "max": 3.0}
    overall = overall_stats(categories)
    assert overall == {"count": 4, "mean": 6.0, "std": 4.0, "min": 1.0, "max": 10.0}
