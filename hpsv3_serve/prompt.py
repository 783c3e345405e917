"""The prompt the model was trained on, its chat-template rendering and its tokenisation.

One source of truth for the text side: the instruction strings live in `prompt_strings.json`
(byte-identical to the official collator), the chat rendering is the Qwen2-VL template's output
for one user message (image first, then text), and sequences end at `<|Reward|>`: attention is
causal, so the official tail after it (`\\n\\nEND\\n<|im_end|>…`) cannot change the score.
"""

from __future__ import annotations

import functools
import json
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer

from .errors import ModelLoadError, PromptError
from .limits import DEFAULT_LIMITS

REWARD_TOKEN = "<|Reward|>"
REWARD_TOKEN_ID = 151657  # len(base Qwen2 tokenizer): the official add_special_tokens lands here
PAD_TOKEN_ID = 151643  # <|endoftext|>: the official right-padding id
IMAGE_PAD_TOKEN = "<|image_pad|>"
IMAGE_PAD_TOKEN_ID = 151655
VOCAB_ROWS = REWARD_TOKEN_ID + 1  # 151658 embedding rows after resize_token_embeddings
FORBIDDEN_IN_PROMPT = (REWARD_TOKEN, IMAGE_PAD_TOKEN, "<|video_pad|>")
PROMPT_CACHE_SIZE = 4096

_STRINGS = json.loads(resources.files(__package__).joinpath("prompt_strings.json").read_text("utf-8"))
INSTRUCTION: str = _STRINGS["instruction"]
PROMPT_WITH_SPECIAL_TOKEN: str = _STRINGS["prompt_with_special_token"]
SYSTEM_PROMPT: str = _STRINGS["system_prompt"]

CHAT_PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


def user_text(prompt: str) -> str:
    """The text part of the user message: instruction with the prompt, then the reward line."""
    return INSTRUCTION.format(text_prompt=prompt) + PROMPT_WITH_SPECIAL_TOKEN


def render_chat(prompt: str) -> str:
    """The full chat text the official pipeline renders (one `<|image_pad|>` before expansion)."""
    return f"{CHAT_PREFIX}{IMAGE_PAD_TOKEN}<|vision_end|>{user_text(prompt)}{CHAT_SUFFIX}"


def _jinja_text(text: str) -> str:
    """A Jinja expression that prints `text` exactly (JSON escapes are valid Jinja string escapes)."""
    return "{{- " + json.dumps(text) + " -}}"


def chat_template() -> str:
    """A Jinja chat template that renders one `[image, text]` user message as HPSv3's prompt, ending at
    `<|Reward|>`: for stock chat servers (`vllm serve`), whose token ids then equal `PromptTokenizer`'s."""
    before, after = INSTRUCTION.split("{text_prompt}")
    reward_line = PROMPT_WITH_SPECIAL_TOKEN[: PROMPT_WITH_SPECIAL_TOKEN.index(REWARD_TOKEN) + len(REWARD_TOKEN)]
    usage = "HPSv3 scores one user message whose content is [image, text]: the image, then the prompt"
    reserved = " or ".join(f"{json.dumps(token)} in content['text']" for token in FORBIDDEN_IN_PROMPT)
    return "".join([
        "{%- if messages | length != 1 or messages[0]['role'] != 'user' or messages[0]['content'] is string"
        " or messages[0]['content'] | length != 2 -%}",
        "{{- raise_exception(" + json.dumps(usage) + ") -}}{%- endif -%}",
        "{%- for message in messages -%}", _jinja_text(CHAT_PREFIX.removesuffix("<|vision_start|>")),
        "{%- for content in message['content'] -%}",
        "{%- if loop.first and content['type'] in ('image', 'image_url') -%}",
        _jinja_text(f"<|vision_start|>{IMAGE_PAD_TOKEN}<|vision_end|>"),
        "{%- elif loop.last and content['type'] == 'text' -%}",
        "{%- if " + reserved + " -%}{{- raise_exception(" + json.dumps("the prompt holds a reserved token") + ") -}}",
        "{%- endif -%}", _jinja_text(before), "{{- content['text'] -}}", _jinja_text(after + reward_line),
        "{%- else -%}{{- raise_exception(" + json.dumps(usage) + ") -}}{%- endif -%}",
        "{%- endfor -%}{%- endfor -%}",
    ])  # fmt: skip


def check_prompt(prompt: object) -> str:
    """Return the prompt if it can be scored; empty prompts are allowed (the official scores them)."""
    if not isinstance(prompt, str):
        raise PromptError(repr(prompt)[:80], f"a prompt must be text, got {type(prompt).__name__}")
    for token in FORBIDDEN_IN_PROMPT:
        if token in prompt:
            raise PromptError(
                repr(prompt[:60]), f"contains the reserved token {token}, which would corrupt the sequence"
            )
    return prompt


class PromptTokenizer:
    """Tokenises prompts into model sequences ending at `<|Reward|>`."""

    def __init__(self, tokenizer: Tokenizer, max_prompt_tokens: int = DEFAULT_LIMITS.max_prompt_tokens) -> None:
        self.max_prompt_tokens = max_prompt_tokens
        if tokenizer.token_to_id(IMAGE_PAD_TOKEN) != IMAGE_PAD_TOKEN_ID:
            raise ModelLoadError(
                f"tokenizer: {IMAGE_PAD_TOKEN} is not id {IMAGE_PAD_TOKEN_ID}: not a Qwen2-VL tokenizer"
            )
        if tokenizer.token_to_id(REWARD_TOKEN) is None:
            tokenizer.add_special_tokens([AddedToken(REWARD_TOKEN, special=True, normalized=False)])
        if tokenizer.token_to_id(REWARD_TOKEN) != REWARD_TOKEN_ID:
            raise ModelLoadError(
                f"tokenizer: {REWARD_TOKEN} got id {tokenizer.token_to_id(REWARD_TOKEN)}, expected {REWARD_TOKEN_ID}"
            )
        self.tokenizer = tokenizer
        # Many images share a prompt (RL groups, rankings, benchmarks): tokenise each prompt once.
        self._cached = functools.lru_cache(maxsize=PROMPT_CACHE_SIZE)(self._text_ids)

    @classmethod
    def from_base(cls, base: Path, max_prompt_tokens: int = DEFAULT_LIMITS.max_prompt_tokens) -> PromptTokenizer:
        """Load `tokenizer.json` from a Qwen2-VL base folder and add `<|Reward|>`."""
        path = Path(base) / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{base}: no tokenizer.json; pass a Qwen2-VL-7B-Instruct folder (or hub id) as --base")
        return cls(Tokenizer.from_file(str(path)), max_prompt_tokens)

    @cached_property
    def _prefix_ids(self) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(CHAT_PREFIX, add_special_tokens=False).ids, np.int64)

    def _text_ids(self, prompt: str) -> np.ndarray:
        """Ids of `<|vision_end|>` + user text up to and including `<|Reward|>` (read-only, cached)."""
        ids = np.asarray(self.tokenizer.encode("<|vision_end|>" + user_text(prompt), add_special_tokens=False).ids)
        ids = ids[: int(np.flatnonzero(ids == REWARD_TOKEN_ID)[0]) + 1].astype(np.int64)
        ids.flags.writeable = False
        return ids

    @cached_property
    def _instruction_tokens(self) -> int:
        """Tokens of the text part that are not the user's prompt (the official instruction around it)."""
        return len(self._cached(""))

    def _prompt_ids(self, prompt: str) -> np.ndarray:
        ids = self._cached(check_prompt(prompt))
        if len(ids) - self._instruction_tokens > self.max_prompt_tokens:
            raise PromptError(
                repr(prompt[:60]),
                f"about {len(ids) - self._instruction_tokens} tokens, over the limit of {self.max_prompt_tokens} "
                "(raise it with --max-prompt-tokens)",
            )
        return ids

    def encode(self, prompts: list[str], image_tokens: list[int]) -> list[np.ndarray]:
        """Token ids per item: chat prefix, image pads, prompt text, ending at `<|Reward|>`."""
        return [
            np.concatenate([self._prefix_ids, np.full(n_image, IMAGE_PAD_TOKEN_ID, np.int64), self._prompt_ids(prompt)])
            for prompt, n_image in zip(prompts, image_tokens, strict=True)
        ]

    def encode_one(self, prompt: str, image_tokens: int) -> np.ndarray:
        """`encode` for a single item."""
        return self.encode([prompt], [image_tokens])[0]
