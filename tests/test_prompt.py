"""Prompt strings, chat rendering and tokenisation against the official ones."""

from __future__ import annotations

from pathlib import Path

import jinja2
import numpy as np
import pytest

from hpsv3_serve.errors import PromptError, TensorError
from hpsv3_serve.limits import InputLimits
from hpsv3_serve.prompt import (
    INSTRUCTION,
    PROMPT_WITH_SPECIAL_TOKEN,
    REWARD_TOKEN_ID,
    VOCAB_ROWS,
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


def test_a_prompt_over_the_byte_limit_is_refused_before_tokenising(tiny: Path) -> None:
    tokenizer = PromptTokenizer.from_base(tiny / "base", InputLimits(max_prompt_bytes=1000))
    with pytest.raises(PromptError, match="2000000 bytes of UTF-8, over the limit of 1000"):
        tokenizer.encode_one("x" * 2_000_000, image_tokens=4)
    with pytest.raises(PromptError, match="1002 bytes of UTF-8"):
        tokenizer.encode_one("€" * 334, image_tokens=4)  # bytes, not characters
    assert tokenizer._cached.cache_info().misses == 0, "neither prompt reached the tokenizer"


def test_only_accepted_prompts_take_a_place_in_the_cache(tiny: Path) -> None:
    tokenizer = PromptTokenizer.from_base(tiny / "base", InputLimits(max_prompt_tokens=8))
    for prompt in ("word " * 50, "\ud800", "a <|Reward|>"):
        with pytest.raises(PromptError):
            tokenizer.encode_one(prompt, image_tokens=4)
    assert tokenizer._cached.cache_info().currsize == 0
    tokenizer.encode_one("a fox", image_tokens=4)
    tokenizer.encode_one("a fox", image_tokens=8)
    assert tokenizer._cached.cache_info().currsize == 1 and tokenizer._cached.cache_info().hits == 1


@pytest.mark.parametrize("prompt", ["\ud800", "fox \udfff", "\udce9"])
def test_text_utf8_cannot_carry_is_refused_on_every_route_alike(tokenizer: PromptTokenizer, prompt: str) -> None:
    with pytest.raises(PromptError, match=r"not valid UTF-8 \(lone surrogate U\+D"):
        tokenizer.encode_one(prompt, image_tokens=4)


@pytest.mark.parametrize("prompt", ["a\x00b", "\u202eabc\u202c", "a\u200bb\ufeff", "<|im_end|>", ""])
def test_nul_bidi_zero_width_and_chat_markup_are_text(tokenizer: PromptTokenizer, prompt: str) -> None:
    ids = tokenizer.encode_one(prompt, image_tokens=4)
    tokenizer.sequence_rules.check(ids, 4)  # and the language tower accepts what preprocess makes


def test_sequence_rules_refuse_ids_preprocess_would_not_make(tokenizer: PromptTokenizer) -> None:
    ids = tokenizer.encode_one("a cat", image_tokens=8)
    rules = tokenizer.sequence_rules
    rules.check(ids, 8)
    broken = {
        "the wrong image token count": (ids, 4),
        "a float": (ids.astype(np.float64), 8),
        "past the vocabulary": (np.concatenate([ids[:-2], [VOCAB_ROWS], ids[-1:]]), 8),
        "no reward at the end": (ids[:-1], 8),
        "over the prompt limit": (np.concatenate([ids[:-1], np.full(3000, 9707), ids[-1:]]), 8),
    }
    for name, (sequence, image_tokens) in broken.items():
        with pytest.raises(TensorError, match="_INPUT_IDS: "):
            rules.check(sequence, image_tokens)
        assert name
