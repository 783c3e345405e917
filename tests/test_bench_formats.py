"""benchmarks/formats.py: each supported file format maps to pairs / ranked lists as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpsv3_benchmarks.formats import DataError, load_lists, load_pairs


def _json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_hpdv3_path1_is_preferred_and_even_votes_are_a_human_tie(tmp_path: Path) -> None:
    data = _json(tmp_path / "test.json", [
        {"prompt": "p", "path1": "a.png", "path2": "/abs/b.png", "model1": "X", "model2": "Y", "choice_dist": [3, 1]},
        {"prompt": "q", "path1": "c.png", "path2": "d.png", "choice_dist": [2, 2], "confidence": None},
    ])  # fmt: skip
    fmt, pairs = load_pairs(data, tmp_path / "root")
    assert fmt == "hpdv3" and len(pairs) == 2
    assert pairs[0].chosen.path == tmp_path / "root" / "a.png" and pairs[0].rejected.path == Path("/abs/b.png")
    assert pairs[0].models == ("X", "Y") and not pairs[0].human_tie
    assert pairs[1].human_tie and pairs[1].models is None
    assert pairs[0].chosen.missing


def test_hpdv2_pairs_follow_human_preference(tmp_path: Path) -> None:
    data = _json(tmp_path / "train.json", [
        {"prompt": "p", "file_path": ["a.png", "b.png"], "human_preference": [0, 1]},
        {"prompt": "p", "file_path": ["a.png", "b.png"], "human_preference": [1, 1]},
    ])  # fmt: skip
    fmt, pairs = load_pairs(data, None)
    assert fmt == "hpdv2-pairs"
    assert (pairs[0].chosen.name, pairs[0].rejected.name, pairs[0].human_tie) == ("b.png", "a.png", False)
    assert pairs[1].human_tie and pairs[0].chosen.path == tmp_path / "b.png", "paths start at the data file's folder"


def test_ranked_lists_give_every_pair_and_equal_ranks_are_ties(tmp_path: Path) -> None:
    data = _json(tmp_path / "test.json", [{"prompt": "p", "image_path": ["a", "b", "c"], "rank": [2, 1, 2]}])
    fmt, lists = load_lists(data, None)
    assert fmt == "hpdv2" and lists[0].ranks == (2.0, 1.0, 2.0)
    pairs = [(p.chosen.name, p.rejected.name, p.human_tie) for p in lists[0].pairs()]
    assert pairs == [("b", "a", False), ("a", "c", True), ("b", "c", False)]
    ir = _json(tmp_path / "ir.json", [{"id": "1", "prompt": "p", "generations": ["a", "b"], "ranking": [1, 2]}])
    assert load_pairs(ir, None)[0] == "imagereward", "pairs accepts ranked lists too"


def test_pickapic_parquet_bytes_labels_and_models(tmp_path: Path) -> None:
    models = {"model_0": "M", "model_1": "N"}
    rows = [
        {"caption": "c", "jpg_0": b"img0", "jpg_1": b"img1", "label_0": 0.0, "label_1": 1.0, **models},
        {"caption": "c", "jpg_0": b"img2", "jpg_1": b"img3", "label_0": 0.5, "label_1": 0.5, **models},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    fmt, pairs = load_pairs(tmp_path / "test.parquet", None, limit=1)
    assert fmt == "pickapic" and len(pairs) == 1, "--limit counts records"
    assert pairs[0].chosen.read() == b"img1" and pairs[0].models == ("N", "M")
    assert pairs[0].chosen.name == "test.parquet#0.jpg_1" and not pairs[0].chosen.missing
    assert load_pairs(tmp_path / "test.parquet", None)[1][1].human_tie


def test_errors_name_the_file_the_record_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--data .*nope.json: no such file"):
        load_pairs(tmp_path / "nope.json", None)
    unknown = _json(tmp_path / "x.json", [{"prompt": "p", "image": "a.png"}])
    with pytest.raises(DataError, match=r"cannot tell the format from the fields \['image', 'prompt'\]; expected"):
        load_pairs(unknown, None)
    broken = _json(tmp_path / "y.json", [{"prompt": "p", "path1": "a", "path2": "b"}, {"path1": "a", "path2": "b"}])
    with pytest.raises(DataError, match=r"y.json: record #1 is not hpdv3 \(KeyError: 'prompt'\)"):
        load_pairs(broken, None)
    uneven = _json(tmp_path / "z.json", [{"prompt": "p", "image_path": ["a", "b"], "rank": [1]}])
    with pytest.raises(DataError, match=r"record #0: 2 image_path but 1 ranks"):
        load_lists(uneven, None)
