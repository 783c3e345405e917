"""The demo page's logic without a page: inputs, ranking, table cells, preference probability, how it starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpsv3_demo import logic
from hpsv3_demo.launch import REPO_EXAMPLES, streamlit_command
from hpsv3_serve.cli import build_parser
from hpsv3_serve.results import ScoreResult


def test_preference_probability_is_the_gaussian_difference() -> None:
    assert logic.preference_probability(1.0, 0.5, 1.0, 2.0) == 0.5
    p = logic.preference_probability(2.0, 0.6, 1.0, 0.8)  # Δ = 1, spread = 1
    assert p == pytest.approx(0.8413447460685429, abs=1e-12)  # Φ(1)
    assert logic.preference_probability(1.0, 0.8, 2.0, 0.6) == pytest.approx(1 - p, abs=1e-12)
    assert logic.preference_probability(0.0, 1e-3, 50.0, 1e-3) == 0.0  # far apart: no NaN, no overflow
    assert logic.preference_probability(3.0, 0.0, 2.0, 0.0) == 1.0  # no uncertainty at all
    assert logic.preference_probability(2.0, 0.0, 2.0, 0.0) == 0.5


def test_labels_repeat_with_a_counter() -> None:
    assert logic.unique_labels(["a.png", "b.png", "a.png", "a.png"]) == ["a.png", "b.png", "a.png (2)", "a.png (3)"]


def test_only_http_urls_are_fetched() -> None:
    items = logic.parse_urls(" https://x.org/a.png \n\n/etc/passwd\nfile:///etc/hosts\nHTTP://y.org/b.jpg")
    assert [item.image for item in items] == ["https://x.org/a.png", None, None, "HTTP://y.org/b.jpg"]
    assert "not an http(s) URL" in items[1].error and "not an http(s) URL" in items[2].error
    refused = logic.parse_urls("https://x.org/a.png", allowed=False)
    assert refused[0].image is None and "--no-urls" in refused[0].error


def test_collect_keeps_page_order_and_reads_examples(tmp_path: Path) -> None:
    example = tmp_path / "e.png"
    example.write_bytes(b"E")
    items = logic.collect([("a.png", b"A"), ("a.png", b"B")], "https://x/a.png\nnope", [("e.png", example)])
    assert [item.label for item in items] == ["a.png", "a.png (2)", "https://x/a.png", "nope", "e.png"]
    assert [item.image for item in items] == [b"A", b"B", "https://x/a.png", None, b"E"]


def test_rows_rank_by_mu_and_keep_errors_apart() -> None:
    items = [logic.Item("low.png", b"1"), logic.Item("bad", error="bad: not an http(s) URL"),
             logic.Item("broken.png", b"12"), logic.Item("high.png", b"3")]  # fmt: skip
    results = [
        ScoreResult("<1 bytes>", "p", mu=0.1, sigma=1.0),
        ScoreResult("<2 bytes>", "p", error="<2 bytes>: IMAGE: not a recognised image format"),
        ScoreResult("<1 bytes>", "p", mu=0.7, sigma=0.5),
    ]
    rows = logic.rows(items, results)
    assert [(r.rank, r.label, r.index) for r in rows] == [
        (1, "high.png", 3), (2, "low.png", 0), (None, "bad", 1), (None, "broken.png", 2),
    ]  # fmt: skip
    assert rows[3].error == "broken.png: IMAGE: not a recognised image format", "the file's name, not <2 bytes>"
    cells = logic.table(rows)
    assert cells[0] == {"rank": "1", "image": "high.png", "mu": "0.70000", "sigma": "0.50000", "error": ""}
    assert cells[2] == {"rank": "—", "image": "bad", "mu": "", "sigma": "", "error": "bad: not an http(s) URL"}
    assert "error" not in logic.table(rows[:2])[0], "no error column when every image was scored"


def test_ties_keep_page_order() -> None:
    items = [logic.Item(name, b"x") for name in ("a", "b", "c")]
    results = [ScoreResult("", "", mu=mu, sigma=1.0) for mu in (0.5, 0.9, 0.5)]
    assert [row.label for row in logic.rows(items, results)] == ["b", "a", "c"]


def test_examples_come_from_the_repository() -> None:
    examples = logic.load_examples(REPO_EXAMPLES)
    assert "square_512.png" in examples.images and all(path.is_file() for path in examples.images.values())
    assert len(examples.prompts) == len(set(examples.prompts)) >= 2
    assert logic.load_examples(None) == logic.load_examples(Path("/nonexistent")) == logic.Examples({}, [])


def test_demo_ui_command_binds_loopback_offline() -> None:
    args = build_parser().parse_args(["demo-ui", "--endpoint", "h:1"])
    assert (args.host, args.port, args.endpoint, args.no_urls) == ("127.0.0.1", 7860, "h:1", False)
    command = streamlit_command("h:1", port=9, allow_urls=False)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("app.py")
    settings = dict(arg[2:].split("=", 1) for arg in command[5 : command.index("--")])
    assert settings["server.address"] == "127.0.0.1" and settings["server.port"] == "9"
    assert settings["browser.gatherUsageStats"] == "false" and settings["server.headless"] == "true"
    page_args = command[command.index("--") + 1 :]
    assert page_args[:2] == ["--endpoint", "h:1"] and "--no-urls" in page_args
    assert page_args[page_args.index("--examples") + 1] == str(REPO_EXAMPLES)
    assert math.isfinite(float(page_args[page_args.index("--timeout") + 1]))


def test_demo_ui_passes_tls_files_to_the_page() -> None:
    tls = {"ssl": True, "root_certificates": "ca.pem", "private_key": "c.key", "certificate_chain": "c.pem"}
    page_args = streamlit_command("h:1", tls=tls)
    page_args = page_args[page_args.index("--") + 1 :]
    for flag, value in (("--tls-root-cert", "ca.pem"), ("--tls-client-cert", "c.pem"), ("--tls-client-key", "c.key")):
        assert page_args[page_args.index(flag) + 1] == value
    assert "--tls-root-cert" not in streamlit_command("h:1")
