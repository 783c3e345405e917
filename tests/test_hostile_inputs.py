"""One hostile corpus (tests/hostile.py: prompts, images, fuzzed files) through every route: in-process `Scorer`,
raw tritonclient, `hpsv3 score --endpoint`, `hpsv3 bench`, and the demo page's logic. Every item gets the same
outcome everywhere (scored with the same score, or its own error), every other item of the run is scored, the server
answers a normal request after each case, and no error carries a trace, a path or an exception repr."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from hpsv3_benchmarks.cli import main as bench
from hpsv3_client import HPSv3Client
from hpsv3_demo.logic import collect, rows
from hpsv3_repository.launcher import TritonServer
from hpsv3_serve.scorer import Scorer

from .hostile import NOT_UTF8, encoded, fuzzed_images, hostile_images, hostile_prompts, picture

HPSV3 = str(Path(sys.executable).with_name("hpsv3"))
SERVED_VS_INPROCESS = 2e-5
GOOD_PROMPT = "a red fox in the snow"
LEAKS = ("Traceback", "At:", 'File "', ".py", "/work", "/tmp", "<class", "Error(")  # what no server message holds


@dataclass(frozen=True)
class Case:
    name: str
    image: bytes
    prompt: str
    expected: str | None  # None: scored; else a fragment of the error
    mu: float | None = None  # the in-process score when scored


def _outcome(case: Case, mu: float | None, error: str | None) -> None:
    """`mu`/`error` is what a route gave for `case`: the in-process score, or the expected error."""
    if case.expected is None:
        assert error is None and mu is not None, (case.name, error)
        assert abs(mu - case.mu) <= SERVED_VS_INPROCESS, (case.name, mu, case.mu)
    else:
        assert mu is None and error and case.expected in error, (case.name, error)


@pytest.fixture(scope="module")
def cases(scorer: Scorer) -> list[Case]:
    """The corpus with each item's in-process outcome: the expected one (fuzzed files: whatever it is)."""
    good = encoded(picture(), "PNG")
    raw = [Case(f"prompt:{n}", good, p, e) for n, (p, e) in hostile_prompts().items()]
    raw += [Case(f"image:{n}", data, GOOD_PROMPT, e) for n, (data, e) in hostile_images().items()]
    raw += [Case(f"image:{n}", data, GOOD_PROMPT, "?") for n, data in fuzzed_images().items()]
    results = scorer.score([case.image for case in raw], [case.prompt for case in raw])
    found = []
    for case, result in zip(raw, results, strict=True):
        if case.expected == "?":
            expected = None if result.ok else result.error.split(": ", 1)[1].split(" (")[0]
            case = Case(case.name, case.image, case.prompt, expected)
        found.append(Case(case.name, case.image, case.prompt, case.expected, result.mu))
    return found


def test_in_process_every_item_has_its_outcome_and_the_rest_are_scored(cases: list[Case]) -> None:
    for case in cases:
        assert (case.expected is None) == (case.mu is not None), (case.name, case.expected)
    assert sum(case.expected is None for case in cases) >= 20, "the corpus keeps enough scored items"


def _raw(client: grpcclient.InferenceServerClient, image: bytes, prompt: bytes) -> tuple[float | None, str | None]:
    inputs = [grpcclient.InferInput(name, [1, 1], "BYTES") for name in ("IMAGE", "PROMPT")]
    inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([[prompt]], dtype=np.object_))
    try:
        return float(client.infer("hpsv3", inputs).as_numpy("MU").ravel()[0]), None
    except InferenceServerException as exc:
        return None, exc.message()


def test_raw_tritonclient_each_case_then_a_normal_request(tiny_server: TritonServer, cases: list[Case]) -> None:
    """What any gRPC client can send: prompts as UTF-8 bytes (lone surrogates as the CESU bytes a careless encoder
    writes), plus byte strings no Python str can hold; after each case a normal request is answered."""
    good = next(case for case in cases if case.name == "prompt:empty")
    extra = [Case(f"bytes:{name}", good.image, data, NOT_UTF8) for name, data in
             {"latin-1": b"caf\xe9", "overlong-slash": b"\xc0\xaf", "cesu-surrogate": b"\xed\xa0\x80",
              "truncated-sequence": b"fox \xe2\x82"}.items()]  # fmt: skip
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        (normal,) = [_raw(client, good.image, GOOD_PROMPT.encode())]
        for case in [*cases, *extra]:
            prompt = case.prompt if isinstance(case.prompt, bytes) else case.prompt.encode("utf-8", "surrogatepass")
            mu, error = _raw(client, case.image, prompt)
            _outcome(case, mu, error)
            if error:
                assert error.startswith(("in ensemble 'hpsv3', IMAGE: ", "in ensemble 'hpsv3', PROMPT: ")), error
                assert not any(leak in error for leak in LEAKS), error
            assert _raw(client, good.image, GOOD_PROMPT.encode()) == normal, f"the request after {case.name}"


def test_hpsv3_score_endpoint_cli_reports_each_line_and_scores_the_rest(
    tiny_server: TritonServer, cases: list[Case], tmp_path: Path
) -> None:
    """`hpsv3 score --endpoint --input FILE.jsonl` over the corpus, plus lines a JSONL file can hold that are not
    items at all (invalid UTF-8, not JSON, nested too deep, wrong types): each its own row, exit status 1."""
    lines = []
    for index, case in enumerate(cases):
        (tmp_path / f"{index}.img").write_bytes(case.image)
        lines.append(json.dumps({"image": f"{index}.img", "prompt": case.prompt}).encode())
    broken = {
        b'{"image": "0.img", "prompt": "caf\xe9"}': "not valid UTF-8",
        b"not json at all": "expected {",
        b"[" * 100_000 + b"]" * 100_000: "expected {",
        b'{"image": "0.img", "prompt": 5}': "a prompt must be text, got int",
        b'{"image": "0.img", "prompt": null}': "a prompt must be text, got NoneType",
        b'{"image": null, "prompt": "p"}': "an image must be a path, URL, bytes, a PIL image or an array",
        b'{"image": "missing.png", "prompt": "p"}': "no such file",
    }
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([*lines, *broken]) + b"\n")
    done = subprocess.run([HPSV3, "score", "--endpoint", tiny_server.grpc_url, "--input", tmp_path / "in.jsonl",
                           "--format", "jsonl"], capture_output=True, timeout=600)  # fmt: skip
    assert done.returncode == 1, done.stderr.decode()
    rows_out = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert len(rows_out) == len(cases) + len(broken)
    for case, row in zip(cases, rows_out, strict=False):
        _outcome(case, row.get("mu"), row.get("error"))
    for fragment, row in zip(broken.values(), rows_out[len(cases) :], strict=True):
        assert fragment in row["error"], row


def test_hpsv3_bench_pairs_scores_every_good_item_and_lists_the_others(
    tiny_server: TritonServer, cases: list[Case], tmp_path: Path
) -> None:
    """Each case against a good anchor image under the case's prompt in an hpdv3 file: the score cache ends up
    holding exactly the items that score, with the in-process scores."""
    anchor = encoded(picture("L").convert("RGB"), "PNG")
    (tmp_path / "anchor.png").write_bytes(anchor)
    records = []
    for index, case in enumerate(cases):
        (tmp_path / f"{index}.img").write_bytes(case.image)
        records.append({"prompt": case.prompt, "path1": f"{index}.img", "path2": "anchor.png"})
    (tmp_path / "data.json").write_text(json.dumps(records))
    cache = tmp_path / "scores.jsonl"
    code = bench(["--endpoint", tiny_server.grpc_url, "pairs", "--data", str(tmp_path / "data.json"),
                  "--output", str(tmp_path / "out"), "--cache", str(cache)], prog="hpsv3 bench")  # fmt: skip
    assert code == 1, "items the endpoint cannot score make the exit status 1"
    cached = {(r["image_sha256"], r["prompt"]): r["mu"] for r in map(json.loads, cache.read_text().splitlines()[1:])}
    for case in cases:
        key = (hashlib.sha256(case.image).hexdigest(), case.prompt)
        if case.expected is None:
            assert abs(cached[key] - case.mu) <= SERVED_VS_INPROCESS, case.name
        else:
            assert key not in cached, case.name
    result = json.loads((tmp_path / "out" / "pairs.json").read_text())
    scored_pairs = sum(case.expected is None for case in cases)
    assert result["overall"]["pairs"] == scored_pairs


def test_demo_page_ranks_the_good_uploads_and_names_each_bad_one(tiny_server: TritonServer, cases: list[Case]):
    """The page's path (demo.logic.collect → HPSv3Client → demo.logic.rows) with every image case uploaded at once."""
    images = [case for case in cases if case.name.startswith("image:")]
    items = collect([(case.name, case.image) for case in images], "", [])
    results = HPSv3Client(tiny_server.grpc_url, concurrency=8).score([item.image for item in items], GOOD_PROMPT)
    table = {row.label: row for row in rows(items, results)}
    for case in images:
        row = table[case.name]
        _outcome(case, row.mu, row.error)
        assert row.error is None or row.error.startswith(case.name), row.error  # the upload's name, not "<N bytes>"
    ranked = sorted((row for row in table.values() if row.rank), key=lambda row: row.rank)
    assert [row.rank for row in ranked] == list(range(1, len(ranked) + 1))


def test_inputs_that_are_not_images_or_text_fail_alone(tiny_server: TritonServer, scorer: Scorer) -> None:
    """Python objects a caller may pass by mistake: the in-process scorer and the client name each one."""
    good = encoded(picture(), "PNG")
    images = [good, None, 5, object(), {"not": "an image"}, good, good, good]
    prompts = ["a", "a", "a", "a", "a", None, 7, ["a list"]]
    for results in (scorer.score(images, prompts), HPSv3Client(tiny_server.grpc_url).score(images, prompts)):
        assert results[0].ok
        for result, fragment in zip(results[1:], ["<NoneType>", "<int>", "<object>", "<dict>", "got NoneType",
                                                  "got int", "got list"], strict=True):  # fmt: skip
            assert result.error and fragment in result.error, result.error
