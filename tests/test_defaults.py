"""hpsv3_serve.defaults: one cache folder, one variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsv3_serve.defaults import CACHE_ENV, cache_dir


def test_the_cache_folder_is_the_variable_else_the_home_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "hpsv3_serve"
