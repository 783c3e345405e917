"""The prompt the model was trained on, its chat-template rendering and its tokenisation.

One source of truth for the text side: the instruction strings live in `prompt_strings.json`
(byte-identical to the official collator), the chat rendering is the Qwen2-VL template's output
for one user message (image first, then text), and sequences end at `<|Reward|>`: attention is
causal, so the official tail after it (`\\n\\nEND\\n<|im_end|>…`) cannot change the score.
"""

from __future__ import annotations

import functools
import json
import reprlib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer

from .errors import ModelLoadError, PromptError, TensorError
from .limits import DEFAULT_LIMITS, InputLimits

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


def check_prompt(prompt: object, limits: InputLimits | None = None) -> str:
    """Return the prompt if it can be scored; empty prompts are allowed (the official scores them). With `limits`,
    also its size in UTF-8 bytes (checked before tokenising: a huge prompt costs nothing).

    Text that UTF-8 cannot carry (a lone surrogate such as "\\ud800", which JSON allows) is refused here, on every
    route, with the same reason the server gives for invalid UTF-8 bytes. NULs, bidi and zero-width characters are
    ordinary text: scored as the official tokenizer reads them.
    """
    if not isinstance(prompt, str):
        raise PromptError(reprlib.repr(prompt), f"a prompt must be text, got {type(prompt).__name__}")
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PromptError(
            repr(prompt[:60]),
            f"not valid UTF-8 (lone surrogate U+{ord(prompt[exc.start]):04X} at character {exc.start})",
        ) from None
    if limits is not None and size > limits.max_prompt_bytes:
        raise PromptError(
            repr(prompt[:60]),
            f"{size} bytes of UTF-8, over the limit of {limits.max_prompt_bytes} (raise it with --max-prompt-bytes)",
        )
    for token in FORBIDDEN_IN_PROMPT:
        if token in prompt:
            raise PromptError(
                repr(prompt[:60]), f"contains the reserved token {token}, which would corrupt the sequence"
            )
    return prompt


def decode_prompt(data: bytes, name: str = "PROMPT") -> str:
    """A prompt received as bytes (a gRPC string tensor) as text; bytes that are not UTF-8 are this item's error."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(name, f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at {exc.start})") from None


@dataclass(frozen=True)
class SequenceRules:
    """What a token sequence from `PromptTokenizer` looks like, for a step that receives ids from elsewhere (the
    language tower of the server): chat prefix, one `<|image_pad|>` per image token, then the text ending at the
    single `<|Reward|>`, every id in the vocabulary and the prompt within its token limit."""

    prefix_ids: np.ndarray
    instruction_tokens: int
    max_prompt_tokens: int

    def check(self, ids: np.ndarray, image_tokens: int, name: str = "_INPUT_IDS") -> None:
        """Raise `TensorError` naming `name` unless `ids` is such a sequence for `image_tokens` image tokens."""
        text_start = len(self.prefix_ids) + image_tokens
        if ids.dtype != np.int64 or ids.ndim != 1:
            raise TensorError(name, f"expected int64 token ids of shape [L], got {ids.dtype} {list(ids.shape)}")
        if not text_start < len(ids) <= text_start + self.instruction_tokens + self.max_prompt_tokens:
            raise TensorError(name, f"{len(ids)} ids for {image_tokens} image tokens: outside what preprocess makes")
        if ids.min() < 0 or ids.max() >= VOCAB_ROWS:
            raise TensorError(name, f"ids must lie in [0, {VOCAB_ROWS})")
        if not np.array_equal(ids[: len(self.prefix_ids)], self.prefix_ids):
            raise TensorError(name, "the sequence does not start with the HPSv3 chat prefix")
        if np.count_nonzero(ids == IMAGE_PAD_TOKEN_ID) != image_tokens or not np.all(
            ids[len(self.prefix_ids) : text_start] == IMAGE_PAD_TOKEN_ID
        ):
            raise TensorError(name, f"expected {image_tokens} {IMAGE_PAD_TOKEN} ids right after the chat prefix")
        if ids[-1] != REWARD_TOKEN_ID or np.count_nonzero(ids == REWARD_TOKEN_ID) != 1:
            raise TensorError(name, f"the sequence must end at its only {REWARD_TOKEN} ({REWARD_TOKEN_ID})")


class PromptTokenizer:
    """Tokenises prompts into model sequences ending at `<|Reward|>`, within `limits` (prompt bytes and tokens)."""

    def __init__(self, tokenizer: Tokenizer, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
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
        # Many images share a prompt (RL groups, rankings, benchmarks): tokenise each prompt once. Refused prompts
        # raise inside, and lru_cache keeps no exceptions: only accepted prompts take a place in the cache.
        self._cached = functools.lru_cache(maxsize=PROMPT_CACHE_SIZE)(self._accepted_ids)

    @classmethod
    def from_base(cls, base: Path, limits: InputLimits = DEFAULT_LIMITS) -> PromptTokenizer:
        """Load `tokenizer.json` from a Qwen2-VL base folder and add `<|Reward|>`."""
        path = Path(base) / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{base}: no tokenizer.json; pass a Qwen2-VL-7B-Instruct folder (or hub id) as --base")
        return cls(Tokenizer.from_file(str(path)), limits)

    @cached_property
    def _prefix_ids(self) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(CHAT_PREFIX, add_special_tokens=False).ids, np.int64)

    def _text_ids(self, prompt: str) -> np.ndarray:
        """Ids of `<|vision_end|>` + user text up to and including `<|Reward|>` (read-only)."""
        ids = np.asarray(self.tokenizer.encode("<|vision_end|>" + user_text(prompt), add_special_tokens=False).ids)
        ids = ids[: int(np.flatnonzero(ids == REWARD_TOKEN_ID)[0]) + 1].astype(np.int64)
        ids.flags.writeable = False
        return ids

    @cached_property
    def _instruction_tokens(self) -> int:
        """Tokens of the text part that are not the user's prompt (the official instruction around it)."""
        return len(self._text_ids(""))

    @cached_property
    def sequence_rules(self) -> SequenceRules:
        """The shape of every sequence this tokenizer makes, for steps that receive ids (`SequenceRules.check`)."""
        return SequenceRules(self._prefix_ids, self._instruction_tokens, self.limits.max_prompt_tokens)

    def _accepted_ids(self, prompt: str) -> np.ndarray:
        ids = self._text_ids(prompt)
        if len(ids) - self._instruction_tokens > self.limits.max_prompt_tokens:
            raise PromptError(
                repr(prompt[:60]),
                f"about {len(ids) - self._instruction_tokens} tokens, over the limit of "
                f"{self.limits.max_prompt_tokens} (raise it with --max-prompt-tokens)",
            )
        return ids

    def _prompt_ids(self, prompt: str) -> np.ndarray:
        return self._cached(check_prompt(prompt, self.limits))

    def encode(self, prompts: list[str], image_tokens: list[int]) -> list[np.ndarray]:
        """Token ids per item: chat prefix, image pads, prompt text, ending at `<|Reward|>`."""
        return [
            np.concatenate([self._prefix_ids, np.full(n_image, IMAGE_PAD_TOKEN_ID, np.int64), self._prompt_ids(prompt)])
            for prompt, n_image in zip(prompts, image_tokens, strict=True)
        ]

    def encode_one(self, prompt: str, image_tokens: int) -> np.ndarray:
        """`encode` for a single item."""
        return self.encode([prompt], [image_tokens])[0]
