"""Prompt strings, chat rendering and tokenisation against the official ones."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from hpsv3_serve.errors import PromptError
from hpsv3_serve.prompt import (
    INSTRUCTION,
    PROMPT_WITH_SPECIAL_TOKEN,
    REWARD_TOKEN_ID,
    PromptTokenizer,
    render_chat,
)
from hpsv3_serve.tiny import QWEN2_VL_CHAT_TEMPLATE


@pytest.fixture(scope="module")
def tokenizer(tiny: Path) -> PromptTokenizer:
    return PromptTokenizer.from_base(tiny / "base")


def test_strings_are_byte_identical_to_official(golden: dict) -> None:
    assert golden["instruction"] == INSTRUCTION
    assert golden["prompt_with_special_token"] == PROMPT_WITH_SPECIAL_TOKEN


def test_render_chat_equals_official_and_the_qwen2_vl_template(golden: dict) -> None:
    prompt = golden["items"][0]["prompt"]
    assert render_chat(prompt) == golden["rendered_chat_first_item"]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION.format(
        text_prompt=prompt) + PROMPT_WITH_SPECIAL_TOKEN}]}]  # fmt: skip
    rendered = jinja2.Template(QWEN2_VL_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    assert render_chat(prompt) == rendered


def test_real_qwen2_tokenizer_rebuilt(tokenizer: PromptTokenizer) -> None:
    hf = tokenizer.tokenizer
    assert hf.encode("Hello world", add_special_tokens=False).ids == [9707, 1879]
    assert hf.encode(" the", add_special_tokens=False).ids == [279]
    assert hf.encode("image: <|Reward|>\n\nEND\n", add_special_tokens=False).ids == [
        1805,
        25,
        220,
        151657,
        271,
        4689,
        198,
    ]
    assert hf.get_vocab_size() == REWARD_TOKEN_ID + 1


def test_sequences_end_at_the_reward_token(tokenizer: PromptTokenizer) -> None:
    ids = tokenizer.encode_one("a cat", image_tokens=256)
    assert ids[-1] == REWARD_TOKEN_ID
    assert (ids == 151655).sum() == 256
    assert (ids == REWARD_TOKEN_ID).sum() == 1


@pytest.mark.parametrize("prompt", ["<|Reward|>", "x <|image_pad|> y", "<|video_pad|>"])
def test_reserved_tokens_in_prompt_are_rejected(tokenizer: PromptTokenizer, prompt: str) -> None:
    with pytest.raises(PromptError, match="reserved token"):
        tokenizer.encode_one(prompt, image_tokens=4)


def test_non_text_prompt_is_rejected(tokenizer: PromptTokenizer) -> None:
    with pytest.raises(PromptError, match="must be text"):
        tokenizer.encode_one(None, image_tokens=4)  # type: ignore[arg-type]
