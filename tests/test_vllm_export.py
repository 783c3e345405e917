"""`hpsv3 export --vllm`: the folder stock vLLM serves faithfully (checked here without vLLM; the scores
through vLLM itself are tests/test_vllm.py, run in .venv-vllm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jinja2 import TemplateError
from safetensors.torch import load_file
from tokenizers import Tokenizer

from hpsv3_export.vllm_export import TOWER_DIR, current_vllm_export, export_vllm, one_d_positions
from hpsv3_serve.checkpoint import read_state_dict
from hpsv3_serve.engines.vllm_engine import collapse_image_pads
from hpsv3_serve.inputs import PIXELS
from hpsv3_serve.prompt import PromptTokenizer


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


def test_exported_chat_template_tokenises_like_the_official_prompt(tiny: Path, tiny_checkpoint: Path, tmp_path: Path):
    """What `vllm serve` renders for a chat request (the folder's template, the folder's tokenizer) is our
    token sequence; messages of another shape are refused with a message that says the expected one."""
    from transformers import AutoTokenizer

    export_vllm(tiny_checkpoint, tiny / "base", tmp_path / "vllm")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "vllm")
    ours = PromptTokenizer.from_base(tiny / "base")
    for prompt in ["a red balloon", "", 'Ünïcødé 🦊 {x} "quoted"\n  two lines  ']:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert list(ids) == collapse_image_pads(ours.encode_one(prompt, image_tokens=4)), prompt
    text_first = [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image"}]}]
    plain_string = [{"role": "user", "content": "x"}]
    two_turns = [{"role": "system", "content": "be nice"}, {"role": "user", "content": [{"type": "image"}]}]
    for messages in (text_first, plain_string, two_turns):
        with pytest.raises(TemplateError, match=r"\[image, text\]"):
            tokenizer.apply_chat_template(messages, tokenize=False)
    reserved = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a <|Reward|>"}]}]
    with pytest.raises(TemplateError, match="reserved token"):
        tokenizer.apply_chat_template(reserved, tokenize=False)
    processor = json.loads((tmp_path / "vllm" / "preprocessor_config.json").read_text())
    assert processor["min_pixels"] == processor["max_pixels"] == PIXELS
