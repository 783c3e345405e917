"""`hpsv3 train` for real on the tiny model: it learns a rule, resumes exactly, and what it writes serves.

One training run (module fixture) on synthetic colour pairs, where the preferred image is the colour the
prompt names, feeds the learning check, the resume check and the end-to-end serving check.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hpsv3_repository.launcher import free_port
from hpsv3_serve.scorer import Scorer
from hpsv3_serve.tiny import TINY_CHECKPOINT
from hpsv3_training.cli import main
from hpsv3_training.synthetic import make_colour_pairs

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_YAML = REPO_ROOT / "training" / "configs" / "tiny.yaml"
STEPS, SAVE_EVERY, RESUME_FROM, EVAL_EVERY = 80, 20, 60, 40
MIN_ACCURACY = 0.9

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the training fixture: minutes on loaded runners


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("colours")
    make_colour_pairs(out, train=256, test=64, seed=0)
    return out


def _args(tiny: Path, colours: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(TINY_YAML),
        f"model.base={tiny / 'base'}", f"model.init={tiny / TINY_CHECKPOINT}",
        f"data.train=[{colours / 'train.json'}]", f"data.eval=[{colours / 'test.json'}]",
        f"train.output_dir={out}", f"train.max_steps={STEPS}", f"train.save_steps={SAVE_EVERY}",
        f"train.eval_steps={EVAL_EVERY}", "train.save_total_limit=null", "train.disable_tqdm=true", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny: Path, colours: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    started = time.monotonic()
    assert main(_args(tiny, colours, out)) == 0
    print(f"\ntraining {STEPS} steps took {time.monotonic() - started:.0f} s")
    return out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_training_learns_the_colour_rule(trained: Path, tiny: Path) -> None:
    metrics = _metrics(trained)
    assert metrics["global_step"] == STEPS
    assert metrics["eval_accuracy"] >= MIN_ACCURACY, metrics
    history = json.loads((trained / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_accuracy" in entry] == [EVAL_EVERY, STEPS], (
        "evaluated during training"
    )
    assert list(trained.glob("runs/**/events.out.tfevents.*")), "TensorBoard logs"


def test_output_is_the_official_layout_with_only_the_reward_row_of_the_embedding_trained(
    trained: Path, tiny: Path
) -> None:
    with safe_open(str(trained / "HPSv3.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        trained_table = handle.get_tensor("model.embed_tokens.weight")
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "rm_head.5.bias"} <= keys
    assert all(key.startswith(("model.layers.", "model.", "visual.", "rm_head.", "lm_head.")) for key in keys)
    assert not any(key.startswith(("model.language_model.", "language_model.")) for key in keys)
    initial = load_file(str(tiny / TINY_CHECKPOINT))["model.embed_tokens.weight"]
    changed = (trained_table != initial).any(dim=1).nonzero().flatten().tolist()
    assert changed == [151657], "embed_tokens is frozen except <|Reward|>"
    assert (trained / "base" / "config.json").is_file() and (trained / "training_config.yaml").is_file()


def test_resume_continues_with_the_same_step_count_and_optimizer_state(
    trained: Path, tiny: Path, colours: Path, tmp_path: Path
) -> None:
    """Resume from the step-60 checkpoint of the run above: steps 61–80 land on the uninterrupted run's state."""
    shutil.copytree(trained / f"checkpoint-{RESUME_FROM}", tmp_path / f"checkpoint-{RESUME_FROM}")
    resume = ["train.resume_from_checkpoint=true", "data.eval=[]"]
    assert main(_args(tiny, colours, tmp_path, *resume)) == 0
    state, reference_state = (json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
                              for out in (tmp_path, trained))  # fmt: skip
    assert state["global_step"] == STEPS
    logged, reference_logged = ([(e["step"], e["loss"]) for e in s["log_history"] if "loss" in e]
                                for s in (state, reference_state))  # fmt: skip
    assert [step for step, _ in logged] == list(range(10, STEPS + 1, 10)), "steps continue from 60, no restart"
    for (_, loss), (_, expected) in zip(logged, reference_logged, strict=True):
        assert loss == pytest.approx(expected, rel=1e-3, abs=1e-6)
    ours = torch.load(tmp_path / f"checkpoint-{STEPS}" / "optimizer.pt", weights_only=True)
    reference = torch.load(trained / f"checkpoint-{STEPS}" / "optimizer.pt", weights_only=True)
    assert ours["state"].keys() == reference["state"].keys()
    for key, slot in reference["state"].items():
        assert int(ours["state"][key]["step"]) == int(slot["step"]) == STEPS
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours["state"][key][name], slot[name], rtol=1e-4, atol=1e-7)
    weights = load_file(str(tmp_path / f"checkpoint-{STEPS}" / "model.safetensors"))
    for name, tensor in load_file(str(trained / f"checkpoint-{STEPS}" / "model.safetensors")).items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def _in_process_accuracy(trained: Path, colours: Path) -> float:
    scorer = Scorer.from_pretrained(trained / "HPSv3.safetensors", trained / "base", batch_size=8)
    records = json.loads((colours / "test.json").read_text())
    correct = 0
    for record in records:
        chosen, rejected = scorer([colours / record["path1"], colours / record["path2"]], record["prompt"])
        correct += chosen > rejected
    return correct / len(records)


def test_served_checkpoint_gives_the_in_process_accuracy(trained: Path, colours: Path, tmp_path: Path) -> None:
    """The output folder → `hpsv3 serve` (real tritonserver) → `benchmarks/run.py pairs` over gRPC."""
    in_training = _metrics(trained)["eval_accuracy"]
    assert _in_process_accuracy(trained, colours) == in_training
    ports = [str(free_port()) for _ in range(3)]
    hpsv3 = str(Path(sys.executable).with_name("hpsv3"))
    serve = subprocess.Popen(
        [hpsv3, "serve", "--checkpoint", str(trained), "--base", str(trained / "base"), "--workdir",
         str(tmp_path / "serve"), "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("endpoint ready" in line for line in lines):
            line = serve.stdout.readline()
            assert line, "hpsv3 serve exited early:\n" + "".join(lines)
            lines.append(line)
        bench = subprocess.run(
            [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "--endpoint", f"127.0.0.1:{ports[0]}",
             "--output", str(tmp_path / "bench"), "pairs", "--data", str(colours / "test.json")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert bench.returncode == 0, bench.stdout + bench.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    overall = json.loads((tmp_path / "bench" / "pairs.json").read_text())["overall"]
    assert overall["pairs"] == 64 and overall["model_ties"] == 0
    assert overall["accuracy"] == pytest.approx(in_training, abs=1e-12)


def test_ctrl_c_leaves_finished_checkpoints_and_a_rerun_resumes_past_a_half_saved_one(
    tiny: Path, colours: Path, tmp_path: Path
) -> None:
    """SIGINT mid-run: exit 130 naming the checkpoint to resume from, no output half-written; a checkpoint cut
    off mid-save (no trainer_state.json) is passed over; the rerun resumes and finishes the run."""
    out = tmp_path / "run"
    hpsv3 = str(Path(sys.executable).with_name("hpsv3"))
    command = [hpsv3, "train", *_args(tiny, colours, out), "train.max_steps=16", "train.save_steps=4",
               "train.eval_steps=16", "train.logging_steps=2"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint-4" / "trainer_state.json").is_file() and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)  # as Ctrl-C
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-2000:]
    done = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/trainer_state.json"))
    assert done and done[-1] < 16, f"interrupted before the end, finished checkpoints: {done}"
    assert f"resume_from_checkpoint=true to continue from {out / f'checkpoint-{done[-1]}'}" in stderr, stderr
    assert not (out / "HPSv3.safetensors").exists() and not (out / "metrics.json").exists()
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.tmp*")), "nothing half-written"

    finished = {step: out / f"checkpoint-{step}" / "trainer_state.json" for step in done}
    finished = {step: state.stat().st_mtime_ns for step, state in finished.items()}
    half_saved = out / f"checkpoint-{done[-1] + 4}"  # as if Ctrl-C came during the next save
    shutil.rmtree(half_saved, ignore_errors=True)
    half_saved.mkdir()
    (half_saved / "model.safetensors").write_bytes(b"\0" * 100)
    second = subprocess.run([*command, "train.resume_from_checkpoint=true"], capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    assert _metrics(out)["global_step"] == 16
    resaved = {step: (out / f"checkpoint-{step}" / "trainer_state.json").stat().st_mtime_ns for step in done}
    assert resaved == finished, "resumed from the last finished checkpoint, earlier ones not redone"
    assert (half_saved / "trainer_state.json").is_file(), "the half-saved checkpoint was saved again, whole"
    history = json.loads((out / "checkpoint-16" / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "loss" in e] == list(range(2, 17, 2)), "one run, steps counted on"
    scorer = Scorer.from_pretrained(out / "HPSv3.safetensors", out / "base")
    assert len(scorer([colours / "images" / "test-0000-a.png"], "a red square")) == 1


def test_script_and_verb_teach_their_usage() -> None:
    for command in ([sys.executable, str(REPO_ROOT / "training" / "train.py"), "--help"],
                    [str(Path(sys.executable).with_name("hpsv3")), "train", "--help"]):  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "--config" in result.stdout and "resume_from_checkpoint" in result.stdout


def test_bad_inputs_fail_with_a_message_naming_them(tiny: Path, colours: Path, tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
    assert main(_args(tiny, colours, tmp_path, "trian.max_steps=3")) == 2
    assert "must start with one of model, data, loss, train" in capsys.readouterr().err
    assert main(_args(tiny, colours, tmp_path, "model.freeze_llms=true")) == 2
    assert "unknown keys ['freeze_llms']" in capsys.readouterr().err
    assert main(_args(tiny, colours, tmp_path, f"data.train=[{tmp_path / 'missing.json'}]")) == 2
    assert "missing.json: no such file" in capsys.readouterr().err
    assert main(_args(tiny, colours, tmp_path, f"data.images_root={tmp_path}")) == 2
    assert "image files" in (err := capsys.readouterr().err) and "data.images_root" in err
