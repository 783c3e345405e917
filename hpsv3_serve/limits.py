"""Input limits, one set used by the in-process scorer, the client and the server's preprocessing.

Defaults fit generated images and prompts with a wide margin; an item past a limit fails alone with an
error naming it, the limit and the flag that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class InputLimits:
    """What one request item may be. `allow_urls`: fetch http(s) images (never on the server, which takes bytes)."""

    max_image_bytes: int = 64 * MIB  # encoded file; checked before reading or fetching all of it
    max_image_pixels: int = 80_000_000  # width × height from the header, before decoding (decompression bombs)
    max_prompt_tokens: int = 2048  # the user's prompt text; the official instruction and image come on top
    max_prompt_bytes: int = 32 * 1024  # UTF-8 bytes, checked before tokenising (16 bytes a token: never hit by text)
    allow_urls: bool = True
    url_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        for name in ("max_image_bytes", "max_image_pixels", "max_prompt_tokens", "max_prompt_bytes", "url_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


DEFAULT_LIMITS = InputLimits()
