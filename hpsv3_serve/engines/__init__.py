"""Engines: one narrow interface (a prepared batch in, `[B, 2]` mu/log_sigma out) per backend."""

from .base import Engine

__all__ = ["Engine"]
