"""benchmarks/cache.py: results survive a kill mid-line; a cache of another model is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsv3_benchmarks.cache import CacheError, ScoreCache, content_key, read_jsonl


def test_a_line_cut_short_by_a_kill_is_dropped_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    cache = ScoreCache(path)
    cache.check_model("hpsv3", (0.5, 1.0))
    first, second = content_key(b"one", "p"), content_key(b"two", "p")
    cache.put(first, 1.25, 0.5)
    cache.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"image_sha256": "ab')  # a kill in the middle of writing a line

    reopened = ScoreCache(path)
    assert reopened.get(first) == (1.25, 0.5) and reopened.get(second) is None
    reopened.check_model("hpsv3", (0.5 + 1e-7, 1.0))  # batching noise is the same model
    reopened.put(second, -0.75, 2.0)
    reopened.close()
    assert [r.get("mu") for r in read_jsonl(path)] == [None, 1.25, -0.75]
    assert path.read_text().count("\n") == 3


def test_another_model_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    cache = ScoreCache(path)
    cache.check_model("hpsv3", (0.5, 1.0))
    cache.close()
    with pytest.raises(CacheError, match=r"another model.*use another --cache"):
        ScoreCache(path).check_model("hpsv3", (0.6, 1.0))


def test_a_damaged_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text('{"format": "hpsv3-bench-scores/1"}\nnot json\n{}\n')
    with pytest.raises(CacheError, match=r"scores.jsonl:2: not a JSON line"):
        ScoreCache(path)
