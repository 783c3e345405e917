"""The trainer's typed errors (light: the command line imports them before torch)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names it."""


class DataError(ValueError):
    """A pair file or image that cannot be used; the message names it and says what to do."""
