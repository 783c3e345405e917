"""`hpsv3 export --vllm`: the folder stock vLLM serves faithfully (checked here without vLLM; the scores
through vLLM itself are tests/test_vllm.py, run in .venv-vllm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file
from tokenizers import Tokenizer

from hpsv3_export.vllm_export import TOWER_DIR, current_vllm_export, one_d_positions
from hpsv3_serve.checkpoint import read_state_dict


def test_export_vllm_writes_1d_positions_the_real_vocab_and_the_fp32_head(
    tiny: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "vllm"
    command = [sys.executable, "-m", "hpsv3_serve.cli", "export", "--checkpoint", str(tiny_checkpoint),
               "--base", str(tiny / "base"), "--vllm", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert "mrope_section" not in json.dumps(config) and config["vocab_size"] == 151658
    weights = load_file(out / "model.safetensors")
    assert not any(key.startswith("rm_head.") for key in weights) and "visual.merger.ln_q.weight" in weights
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Dense", "Dense", "Dense"]
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_lasttoken"]
    reference = read_state_dict(tiny_checkpoint)
    for folder, layer in (("2_Dense", 0), ("3_Dense", 3), ("4_Dense", 5)):
        dense = load_file(out / folder / "model.safetensors")
        assert dense["linear.weight"].dtype.is_floating_point and str(dense["linear.weight"].dtype) == "torch.float32"
        assert dense["linear.weight"].equal(reference[f"rm_head.{layer}.weight"])
    tower = out / TOWER_DIR
    assert (tower / "config.json").resolve() == (out / "config.json").resolve()
    assert not (tower / "modules.json").exists(), "the tower view pools the hidden state, without the head"
    assert current_vllm_export(out)["vocab_rows"] == 151658
    assert Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id("<|Reward|>") == 151657


def test_1d_positions_for_legacy_and_transformers5_configs() -> None:
    legacy = {"rope_theta": 1e6, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
    assert one_d_positions(legacy) == {"rope_theta": 1e6}
    v5 = {
        "text_config": {"rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}}
    }
    text = one_d_positions(v5)["text_config"]
    assert text["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6} and text["rope_theta"] == 1e6
