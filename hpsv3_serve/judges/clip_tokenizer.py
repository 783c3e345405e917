"""The real CLIP BPE tokenizer rebuilt offline, for tiny test models (the hub's `tokenizer.json` when online).

OpenAI's CLIP vocabulary is `bpe_simple_vocab_16e6.txt.gz` (48894 merges), shipped inside the `open_clip_torch`
wheel on PyPI. The vocabulary is built as OpenAI's `SimpleTokenizer` builds it (256 byte symbols, the same with
`</w>`, one token per merge, then `<|startoftext|>` 49406 and `<|endoftext|>` 49407) and wrapped in the pipeline
transformers' `CLIPConverter` writes into the hub's `tokenizer.json` files. Only the wheel's file is read.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..defaults import cache_dir
from ..qwen_tokenizer import TokenizerSourceError, bytes_to_unicode, wheel_file

OPEN_CLIP_WHEEL = "open_clip_torch==3.3.0"
VOCAB_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
MERGES = 49152 - 256 - 2  # the merges OpenAI's SimpleTokenizer keeps
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 49408
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def find_vocab() -> Path:
    """The BPE file: the cache, or a fresh pip download into it."""
    cached = cache_dir() / "bpe_simple_vocab_16e6.txt.gz"
    if cached.is_file():
        return cached
    hint = f"put its `{VOCAB_MEMBER}` at {cached}"
    return wheel_file(OPEN_CLIP_WHEEL, VOCAB_MEMBER, cached, "rebuild the CLIP tokenizer", hint)


def build_clip_tokenizer(vocab_path: Path | None = None) -> Tokenizer:
    """CLIP's fast tokenizer: NFC, whitespace runs to one space, lowercase, BPE with `</w>`, BOS/EOS added."""
    data = (vocab_path or find_vocab()).read_bytes()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise TokenizerSourceError(f"{vocab_path}: not the known bpe_simple_vocab_16e6.txt.gz (sha256 {VOCAB_SHA256})")
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1 : MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise TokenizerSourceError(f"CLIP vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>", unk_token=EOS)
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False, add_prefix_space=False
    )
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=True) for token in (BOS, EOS)])
    return tokenizer
