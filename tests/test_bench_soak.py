"""`hpsv3 bench soak` against the real served tiny model: every request accounted for and checked, the
server's memory sampled; remote endpoints and unbounded runs refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpsv3_benchmarks.cli import main
from hpsv3_benchmarks.soak import memory_summary
from hpsv3_repository.build import render, settings_for
from hpsv3_repository.launcher import TritonServer, free_port
from hpsv3_repository.supervisor import StubWatchdog


def test_a_short_soak_answers_every_request_correctly(tiny_server: TritonServer, tmp_path: Path) -> None:
    prompts = ["--prompt", "a fox", "--prompt", "a lighthouse"]
    status = main(["--endpoint", tiny_server.grpc_url, "soak", "--minutes", "0.2", "--concurrency", "4",
                   "--sample-s", "1", *prompts, "--output", str(tmp_path)])  # fmt: skip
    assert status == 0
    result = json.loads((tmp_path / "soak.json").read_text())
    counts = result["counts"]
    assert counts["sent"] > 8 and counts["correct"] == counts["sent"], counts
    assert counts.get("wrong", 0) == counts.get("failed", 0) == counts["lost"] == 0
    assert result["items"] == 8, "4 synthetic images × 2 prompts rotate"
    memory = result["memory"]
    assert memory["samples"] >= 3 and 0 < memory["start_mib"] <= memory["peak_mib"]
    parts = memory["parts"]
    models = {"preprocess", "preprocess_patches", "vision_encoder", "language_model", "reward_head"}
    assert set(parts) == {"tritonserver", *models, "shared_memory"}
    assert memory["end_mib"] == pytest.approx(sum(part["end_mib"] for part in parts.values()))
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--endpoint", "10.1.2.3:8001", "soak"], "only against a loopback endpoint"),
     (["--endpoint", "127.0.0.1:1", "soak", "--minutes", "500"], "--minutes must be in")],
)  # fmt: skip
def test_remote_or_unbounded_soaks_are_refused(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main([*arguments, "--output", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_memory_trend_ignores_the_warm_up() -> None:
    samples = [{"t": 0.0, "tritonserver": 60.0, "preprocess": 40.0},
               {"t": 10.0, "tritonserver": 300.0, "preprocess": 100.0}]  # fmt: skip
    samples += [{"t": float(t), "tritonserver": 300.0, "preprocess": 200.0 + t / 60} for t in range(20, 120, 10)]
    summary = memory_summary(samples)
    assert summary["start_mib"] == 100 and summary["peak_mib"] > 500
    assert summary["warm_mib"] == pytest.approx(500 + 30 / 60), "the first sample after the first fifth (t=30)"
    assert summary["trend_mib_per_min"] == pytest.approx(1.0)
    assert summary["parts"]["tritonserver"]["trend_mib_per_min"] == pytest.approx(0.0, abs=1e-9)
    assert summary["parts"]["preprocess"]["trend_mib_per_min"] == pytest.approx(1.0)


@pytest.fixture()
def supervised_server(tiny_artifacts: Path, tmp_path: Path) -> Iterator[tuple[TritonServer, StubWatchdog]]:
    """The tiny model served as `hpsv3 serve` does: explicit model control and the stub watchdog."""
    repository = render("cpu", settings_for(tiny_artifacts), tmp_path / "repository")
    server = TritonServer(repository, grpc_port=free_port(), http_port=None, metrics_port=None,
                          workdir=tmp_path / "server", explicit_models=True)  # fmt: skip
    server.start(timeout_s=180)
    watchdog = StubWatchdog(
        server.pid, server.grpc_url, interval_s=0.5, say=lambda line: None, admin_key=server.admin_key
    )
    watchdog.start()
    yield server, watchdog
    watchdog.stop()
    server.stop()


def test_a_killed_language_model_stub_loses_nothing(supervised_server, tmp_path: Path) -> None:
    """Fault injection: the language tower's stub is SIGKILLed mid-soak; the watchdog reloads it, the client
    retries, and every request is answered correctly; the report gives the recovery time."""
    server, watchdog = supervised_server
    status = main(["--endpoint", server.grpc_url, "soak", "--minutes", "0.3", "--concurrency", "4",
                   "--kill", "language_model@5", "--output", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "soak.json").read_text())
    counts = result["counts"]
    assert status == 0, result["reasons"]
    assert counts["correct"] == counts["sent"] and counts["lost"] == 0, counts
    (fault,) = result["faults"]
    assert fault["model"] == "language_model" and 0 < fault["recovery_s"] < 15
    assert [r.model for r in watchdog.recoveries] == ["language_model"] and watchdog.recoveries[0].ok
    assert "Faults injected" in (tmp_path / "soak.md").read_text()


def test_a_full_queue_refuses_at_once_and_retrying_clients_lose_nothing(tiny_artifacts: Path, tmp_path: Path) -> None:
    """Backpressure: with room for 1 waiting request, 24 in flight overflow the queue; without retries the
    overflow gets a clear per-item error and the server goes on; with retries every request is answered."""
    from hpsv3_client import HPSv3Client

    settings = settings_for(tiny_artifacts, max_queue_size=1, preprocess_instances=1)
    repository = render("cpu", settings, tmp_path / "repository")
    server = TritonServer(repository, grpc_port=free_port(), http_port=None, metrics_port=None,
                          workdir=tmp_path / "server")  # fmt: skip
    server.start(timeout_s=180)
    try:
        image = (Path(__file__).parent / "fixtures" / "images" / "square_512.png").read_bytes()
        impatient = HPSv3Client(server.grpc_url, concurrency=24, retries=0).score([image] * 48, "a fox")
        refused = [r for r in impatient if r.error]
        assert refused and all("Exceeds maximum queue size" in r.error for r in refused)
        assert len(refused) < 48, "the server kept serving"
        patient = HPSv3Client(server.grpc_url, concurrency=24, retries=30, backoff_s=0.05).score([image] * 48, "a fox")
        assert [r.error for r in patient] == [None] * 48
        assert len({round(r.mu, 5) for r in patient}) == 1
    finally:
        server.stop()
