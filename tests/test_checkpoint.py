"""Checkpoint I/O: official and transformers-5 layouts, pickle refused, hub revisions, the export cache key."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hpsv3_serve import checkpoint as checkpoint_module
from hpsv3_serve.checkpoint import (
    CHECKPOINT_FILE,
    TO_SAFETENSORS,
    cached_digest,
    hub_commit,
    load_model,
    read_state_dict,
    resolve_base,
    resolve_checkpoint,
    source_record,
    to_our_key,
)
from hpsv3_serve.cli import main as hpsv3
from hpsv3_serve.errors import ModelLoadError
from hpsv3_serve.prompt import VOCAB_ROWS
from hpsv3_serve.scorer import Scorer

from .conftest import HUB_BASE, HUB_CHECKPOINT, HUB_COMMIT, HUB_TAG, IMAGES

ROOT = Path(__file__).resolve().parent.parent


def test_official_layout_keys(tiny_checkpoint: Path) -> None:
    keys = set(load_file(str(tiny_checkpoint)))
    assert {
        "visual.patch_embed.proj.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    } <= keys
    assert {"rm_head.0.weight", "rm_head.3.weight", "rm_head.5.weight", "rm_head.5.bias"} <= keys
    assert load_file(str(tiny_checkpoint))["model.embed_tokens.weight"].shape[0] == VOCAB_ROWS


def test_key_mapping() -> None:
    assert to_our_key("model.layers.3.self_attn.q_proj.weight") == "language_model.layers.3.self_attn.q_proj.weight"
    assert to_our_key("model.language_model.norm.weight") == "language_model.norm.weight"
    assert to_our_key("model.visual.merger.ln_q.weight") == "visual.merger.ln_q.weight"
    assert to_our_key("lm_head.weight") is None
    with pytest.raises(ModelLoadError, match="unexpected checkpoint key"):
        to_our_key("decoder.weight")


def _score(checkpoint: Path, base: Path) -> float:
    (result,) = Scorer.from_pretrained(checkpoint, base).score([IMAGES / "square_512.png"], "a fox")
    return result.mu


def test_transformers5_layout_loads_the_same(tiny: Path, tiny_checkpoint: Path) -> None:
    official = load_file(str(tiny_checkpoint))
    v5 = {
        (
            "model.language_model." + k[6:]
            if k.startswith("model.")
            else "model." + k
            if k.startswith("visual.")
            else k
        ): v
        for k, v in official.items()
    }
    save_file(v5, str(tiny / "v5.safetensors"))
    expected = _score(tiny_checkpoint, tiny / "base")
    assert _score(tiny / "v5.safetensors", tiny / "base") == pytest.approx(expected, abs=1e-6)


def test_pickle_is_refused_with_a_conversion_command_that_works(tiny: Path, tiny_checkpoint: Path, tmp_path: Path):
    pickled = tmp_path / "final model.pth"  # a space: the command quotes the paths
    torch.save({"model": load_file(str(tiny_checkpoint))}, pickled)
    with pytest.raises(ModelLoadError, match=r"pickle checkpoints \(\.pt, \.pth, \.bin\) are not loaded") as refusal:
        resolve_checkpoint(str(pickled))
    with pytest.raises(ModelLoadError, match="python -c"):
        read_state_dict(pickled)
    command = shlex.split(str(refusal.value).split("(torch>=2.6): ", 1)[1])
    assert command[0] == "python"
    subprocess.run([sys.executable, *command[1:]], check=True, timeout=120)
    converted = tmp_path / "final model.safetensors"
    assert _score(converted, tiny / "base") == pytest.approx(_score(tiny_checkpoint, tiny / "base"), abs=1e-6)
    assert TO_SAFETENSORS in (ROOT / "docs" / "RELIABILITY.md").read_text(), "the documented command is this one"


def test_rm_head_read_as_float32_even_when_model_is_bfloat16(tiny_checkpoint: Path) -> None:
    state = read_state_dict(tiny_checkpoint, torch.bfloat16)
    assert state["rm_head.0.weight"].dtype == torch.float32
    assert state["language_model.norm.weight"].dtype == torch.bfloat16


def test_missing_paths_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_base(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"hf download MizzenAI/HPSv3.*local path"):
        resolve_checkpoint("MizzenAI/HPSv3")
    with pytest.raises(ModelLoadError, match="Qwen/Qwen2-VL-7B-Instruct"):
        resolve_base("Qwen/Qwen2-VL-7B-Instruct")


def test_hub_revision_resolves_offline_and_is_recorded(hub: Path) -> None:
    """A tag and a commit hash both resolve in the cache; the record keeps the spec, the revision asked for and
    the commit it resolved to."""
    checkpoint = resolve_checkpoint(HUB_CHECKPOINT, revision=HUB_TAG)
    assert checkpoint.parent.parent.name == "snapshots" and checkpoint.name == CHECKPOINT_FILE
    assert source_record(checkpoint) == {"spec": HUB_CHECKPOINT, "revision": HUB_TAG, "commit": HUB_COMMIT,
                                         "path": str(checkpoint)}  # fmt: skip
    base = resolve_base(HUB_BASE, HUB_COMMIT)
    assert (base / "tokenizer.json").is_file() and source_record(base)["commit"] == HUB_COMMIT
    with pytest.raises(ModelLoadError, match=rf"at revision 'v2'.*hf download {HUB_CHECKPOINT} --revision v2"):
        resolve_checkpoint(HUB_CHECKPOINT, revision="v2")


def test_revision_with_a_local_path_is_refused(tiny: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"revision 'v1' is for hub ids.*drop the revision"):
        resolve_checkpoint(str(tiny_checkpoint), revision="v1")
    with pytest.raises(ModelLoadError, match="drop the revision"):
        resolve_base(str(tiny / "base"), "v1")


def test_local_paths_are_recorded_as_given(tiny_checkpoint: Path, hub: Path) -> None:
    assert hub_commit(tiny_checkpoint) is None
    assert source_record(tiny_checkpoint) == {"spec": str(tiny_checkpoint), "revision": None, "commit": None,
                                              "path": str(tiny_checkpoint)}  # fmt: skip
    snapshot = hub / "models--org--hpsv3-tiny" / "snapshots" / HUB_COMMIT / CHECKPOINT_FILE  # a cache path given
    assert source_record(snapshot)["commit"] == HUB_COMMIT


def test_export_manifest_records_where_checkpoint_and_base_came_from(
    hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--revision`/`--base-revision` of `hpsv3 export` (shared by score and serve) reach the hub and the manifest."""
    out = tmp_path / "vllm"
    argv = ["export", "--checkpoint", HUB_CHECKPOINT, "--revision", HUB_TAG, "--base", HUB_BASE,
            "--base-revision", HUB_COMMIT, "--vllm", str(out)]  # fmt: skip
    assert hpsv3(argv) == 0, capsys.readouterr().err
    manifest = json.loads((out / "hpsv3_vllm.json").read_text())
    assert manifest["checkpoint"] | {"path": ""} == {"spec": HUB_CHECKPOINT, "revision": HUB_TAG,
                                                    "commit": HUB_COMMIT, "path": ""}  # fmt: skip
    assert manifest["base"]["revision"] == manifest["base"]["commit"] == HUB_COMMIT
    assert hpsv3([*argv[:3], "--revision", "v2", *argv[5:]]) == 2
    assert "hf download org/hpsv3-tiny --revision v2" in capsys.readouterr().err


def test_digest_covers_every_base_file_and_is_not_recomputed_while_they_are_unchanged(
    tiny: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny / "base", base)
    hashed: list[Path] = []
    real = checkpoint_module.source_digest
    monkeypatch.setattr(checkpoint_module, "source_digest", lambda c, b: hashed.append(b) or real(c, b))
    first = cached_digest(tiny_checkpoint, base, tmp_path)
    assert cached_digest(tiny_checkpoint, base, tmp_path) == first and len(hashed) == 1  # remembered
    digests = {first}
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json"):  # config.json unchanged
        with (base / name).open("a") as handle:
            handle.write(" ")
        digests.add(cached_digest(tiny_checkpoint, base, tmp_path))
    (base / "generation_config.json").write_text("{}")  # a file that was not there
    digests.add(cached_digest(tiny_checkpoint, base, tmp_path))
    assert len(digests) == len(hashed) == 5


def test_checkpoint_that_does_not_fit_the_base(tiny: Path, tiny_checkpoint: Path) -> None:
    state = load_file(str(tiny_checkpoint))
    del state["model.norm.weight"]
    save_file(state, str(tiny / "broken.safetensors"))
    with pytest.raises(ModelLoadError, match="does not fit the base config"):
        load_model(tiny / "broken.safetensors", tiny / "base")
