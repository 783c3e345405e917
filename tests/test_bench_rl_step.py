"""`hpsv3 bench rl-step` on a few arrays: every route against the tiny server, and the reward-server protocol (JPEG,
pickle, Flask under gunicorn) with this project's Scorer standing in for the official inferencer (CI has no
.venv-official; docs/PERFORMANCE.md has the run against the official one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpsv3_benchmarks.cli import main
from hpsv3_benchmarks.rl_step import make_arrays
from hpsv3_repository.launcher import TritonServer
from hpsv3_serve.inputs import prepare_image

COUNT, SIDES, SEED = 5, (300, 600), 3
EXACT = 1e-5  # the patches and file routes against in-process: the same pixels, the same graphs


@pytest.mark.slow
def test_rl_step_measures_every_route_and_the_jpeg_error(
    tiny: Path, tiny_artifacts: Path, tiny_server: TritonServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    code = main(
        ["--endpoint", tiny_server.grpc_url, "--output", str(out), "--concurrency", "4", "rl-step",
         "--checkpoint", str(tiny / "HPSv3-tiny.safetensors"), "--base", str(tiny / "base"),
         "--artifacts", str(tiny_artifacts), "--reward-scorer", "project", "--batch-sizes", "1,3",
         "--count", str(COUNT), "--min-side", str(SIDES[0]), "--max-side", str(SIDES[1]), "--seed", str(SEED),
         "--repeats", "1"],
        prog="hpsv3 bench",
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "rl-step.json").read_text())
    assert (out / "rl-step.md").read_text() in capsys.readouterr().out

    routes = {route["route"]: route for route in report["routes"]}
    assert list(routes) == ["patches", "file-bytes", "reward-server", "in-process"]
    for route in routes.values():
        assert route["images_per_s"] > 0 and route["client_cpu_ms_per_image"] > 0, route
        assert route["ratio_to_reward_server"] == pytest.approx(
            route["images_per_s"] / routes["reward-server"]["images_per_s"]
        )
    assert routes["reward-server"]["server_cpu_ms_per_image"] > 0, "the gunicorn worker's CPU is counted"
    assert routes["patches"]["server_cpu_ms_per_image"] is None, "a running server: its CPU is not ours to read"

    arrays = make_arrays(COUNT, SEED, *SIDES)
    patch_bytes = sum(prepare_image(array).patches.nbytes for array in arrays) / COUNT
    assert patch_bytes < routes["patches"]["wire_bytes_per_image"] < patch_bytes + 1000, "uint8 patches + a header"
    ppm_bytes = sum(array.nbytes for array in arrays) / COUNT
    assert ppm_bytes < routes["file-bytes"]["wire_bytes_per_image"] < ppm_bytes + 1000
    assert 0 < routes["reward-server"]["wire_bytes_per_image"] < ppm_bytes / 3, "JPEG compresses"
    assert routes["in-process"]["wire_bytes_per_image"] == 0

    scores = report["scores"]
    assert scores["reference"] == "in-process" and scores["mu_std"] > 0
    assert scores["routes"]["patches"]["max_abs_dmu"] <= EXACT
    assert scores["routes"]["file-bytes"]["max_abs_dmu"] <= EXACT
    jpeg = scores["routes"]["reward-server"]
    assert jpeg["max_abs_dmu"] > EXACT, "JPEG is lossy"
    assert jpeg["max_abs_dmu"] == pytest.approx(scores["jpeg_only"]["max_abs_dmu"], abs=1e-4), (
        "the server scores the very pixels PIL decodes from the client's JPEGs"
    )
    served = report["reward_server"]
    assert served["scorer"] == "project" and [s["batch_size"] for s in served["sweep"]] == [1, 3]
    assert report["goal"]["met"] is None, "a stand-in is never judged against the goal"
    assert report["run"]["endpoint"] == tiny_server.grpc_url and report["machine"]["cpus_usable"] >= 1


def test_rl_step_says_what_it_needs(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["rl-step"], prog="hpsv3 bench")
    assert exit_info.value.code == 2
    assert "--endpoint HOST:PORT (a running server) or --tiny DIR" in capsys.readouterr().err


def test_arrays_are_seeded_and_of_mixed_sizes() -> None:
    arrays = make_arrays(8, 0, 512, 1024)
    assert [a.shape for a in arrays] == [a.shape for a in make_arrays(8, 0, 512, 1024)]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, make_arrays(8, 0, 512, 1024), strict=True))
    assert len({a.shape for a in arrays}) > 4 and all(a.dtype == np.uint8 and a.shape[2] == 3 for a in arrays)
    assert all(512 <= side <= 1024 for a in arrays for side in a.shape[:2])
