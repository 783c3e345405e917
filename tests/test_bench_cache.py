"""benchmarks/cache.py: results survive a kill mid-line; scores are kept per model; a model that scores the probe
otherwise is refused; caches of format /1 (one model) stay readable."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsv3_benchmarks.cache import CacheError, ScoreCache, content_key, read_jsonl


def test_a_line_cut_short_by_a_kill_is_dropped_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    cache = ScoreCache(path)
    cache.check_model("hpsv3", (0.5, 1.0))
    first, second = content_key(b"one", "p"), content_key(b"two", "p")
    cache.put("hpsv3", first, 1.25, 0.5)
    cache.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"image_sha256": "ab')  # a kill in the middle of writing a line

    reopened = ScoreCache(path)
    assert reopened.get("hpsv3", first) == (1.25, 0.5) and reopened.get("hpsv3", second) is None
    reopened.check_model("hpsv3", (0.5 + 1e-7, 1.0))  # batching noise is the same model
    reopened.put("hpsv3", second, -0.75, 2.0)
    reopened.close()
    assert [r.get("mu") for r in read_jsonl(path)] == [None, 1.25, -0.75]
    assert path.read_text().count("\n") == 3


def test_another_model_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    cache = ScoreCache(path)
    cache.check_model("hpsv3", (0.5, 1.0))
    cache.close()
    with pytest.raises(CacheError, match=r"another model named 'hpsv3'.*use another --cache"):
        ScoreCache(path).check_model("hpsv3", (0.6, 1.0))


def test_a_damaged_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text('{"format": "hpsv3-bench-scores/1"}\nnot json\n{}\n')
    with pytest.raises(CacheError, match=r"scores.jsonl:2: not a JSON line"):
        ScoreCache(path)


def test_scores_are_kept_per_model_and_a_new_model_gets_its_own_header(tmp_path: Path) -> None:
    path, key = tmp_path / "scores.jsonl", content_key(b"one", "p")
    cache = ScoreCache(path)
    cache.check_model("hpsv3", (0.5, 1.0))
    cache.put("hpsv3", key, 1.25, 0.5)
    cache.check_model("pickscore", (21.0, None))
    cache.put("pickscore", key, 20.5, None)
    cache.close()
    reopened = ScoreCache(path)
    assert reopened.get("hpsv3", key) == (1.25, 0.5) and reopened.get("pickscore", key) == (20.5, None)
    assert reopened.get("clip-h", key) is None
    reopened.check_model("pickscore", (21.0, None))
    with pytest.raises(CacheError, match=r"another model named 'pickscore'"):
        reopened.check_model("pickscore", (22.0, None))
    records = read_jsonl(path)
    assert [r.get("model") for r in records] == ["hpsv3", "hpsv3", "pickscore", "pickscore"]
    assert records[3] == {"model": "pickscore", "image_sha256": key[0], "prompt": "p", "score": 20.5}


def test_a_cache_of_format_1_stays_readable_and_takes_more_models(tmp_path: Path) -> None:
    """Format /1 (before several models): the first line names the model, score lines do not."""
    path, key = tmp_path / "scores.jsonl", content_key(b"one", "p")
    path.write_text(
        '{"format": "hpsv3-bench-scores/1", "model": "hpsv3", "probe_mu": 0.5, "probe_sigma": 1.0}\n'
        f'{{"image_sha256": "{key[0]}", "prompt": "p", "mu": 1.25, "sigma": 0.5}}\n'
    )
    cache = ScoreCache(path)
    cache.check_model("hpsv3", (0.5, 1.0))
    cache.check_model("clip-h", (0.3, None))
    cache.put("clip-h", key, 0.25, None)
    cache.close()
    reopened = ScoreCache(path)
    assert reopened.get("hpsv3", key) == (1.25, 0.5) and reopened.get("clip-h", key) == (0.25, None)
