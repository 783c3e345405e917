"""The offline fixture builder: a real Qwen2 tokenizer and an official-layout tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpsv3_serve.checkpoint import load_config
from hpsv3_serve.qwen_tokenizer import TokenizerSourceError, build_tokenizer, find_tiktoken


def test_tokenizer_has_qwen2_merges_and_specials(tiny: Path) -> None:
    data = json.loads((tiny / "base" / "tokenizer.json").read_text(encoding="utf-8"))
    assert len(data["model"]["merges"]) == 151387
    assert len(data["model"]["vocab"]) == 151643
    specials = {token["content"]: token["id"] for token in data["added_tokens"]}
    assert specials["<|endoftext|>"] == 151643 and specials["<|video_pad|>"] == 151656
    assert "<|Reward|>" not in specials, "the base tokenizer is Qwen2-VL's; <|Reward|> is added at load time"


def test_base_config_is_the_official_flat_qwen2_vl_layout(tiny: Path) -> None:
    raw = json.loads((tiny / "base" / "config.json").read_text())
    assert raw["model_type"] == "qwen2_vl" and raw["vocab_size"] == 152064
    assert raw["rope_scaling"]["type"] == "mrope", "like the real base: M-RoPE config, used with 1-D positions"
    assert load_config(tiny / "base").text_config.hidden_size == raw["hidden_size"]


def test_wrong_or_missing_tiktoken_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenizerSourceError, match="not found"):
        find_tiktoken(tmp_path / "nope.tiktoken")
    fake = tmp_path / "qwen.tiktoken"
    fake.write_text("IQ== 0\n")
    with pytest.raises(TokenizerSourceError, match=r"not the known qwen\.tiktoken"):
        build_tokenizer(fake)
