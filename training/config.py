"""Training configs: a YAML file with sections `model`, `data`, `loss`, `train`, plus `key.path=value` overrides.

- `model`: `ModelOptions` below (base, init, dtype, freezing, LoRA, checkpointing), applied by `model_setup.py`.
- `data`: `DataOptions` below.
- `loss`: `type` (uncertainty | bt | btt | constant_margin) and `reward_row_lr` (the official special_token_lr).
- `train`: passed to `transformers.TrainingArguments` as is (output_dir, learning_rate, per_device_train_batch_size,
  num_train_epochs or max_steps, eval_steps, save_steps, bf16, deepspeed, report_to, ...); see its docs.
Override values are parsed as YAML (`train.learning_rate=1e-4`, `model.lora.enable=true`, `data.eval=[a.json]`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SECTIONS = ("model", "data", "loss", "train")
EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-4: a string to YAML 1.1, a float here


@dataclass
class LoraOptions:
    """peft LoRA on the Linear layers of the language tower (and the vision tower with `vision`)."""

    enable: bool = False
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    vision: bool = False


@dataclass
class ModelOptions:
    """The `model:` section of a training config."""

    base: str = "Qwen/Qwen2-VL-7B-Instruct"  # config.json + tokenizer (and weights when init is null)
    init: str | None = None  # HPSv3 checkpoint to fine-tune; null: the base folder's Qwen2-VL weights
    dtype: str = "float32"  # weights dtype; rm_head stays float32
    freeze_vision_tower: bool = False
    tune_merger: bool = True
    freeze_llm: bool = False
    train_reward_token: bool = True
    gradient_checkpointing: bool = False
    lora: LoraOptions = field(default_factory=LoraOptions)


@dataclass
class DataOptions:
    """HPDv3 pair files and filters (see `data.py`)."""

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    images_root: str | None = None
    confidence_threshold: float | None = 0.95
    tied_threshold: float | None = None


@dataclass
class LossOptions:
    type: str = "uncertainty"
    reward_row_lr: float | None = None


@dataclass
class TrainConfig:
    """A whole training run; `train` holds TrainingArguments keyword arguments."""

    model: ModelOptions
    data: DataOptions
    loss: LossOptions
    train: dict[str, Any]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for writing back as YAML (the config used, saved beside the checkpoint)."""
        values = dataclasses.asdict(self)
        values.pop("source")
        return values


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass, naming unknown keys."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r:.80}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    if cls is ModelOptions and "lora" in values:
        values = {**values, "lora": _build(LoraOptions, values["lora"] or {}, f"{where}.lora")}
    return cls(**values)


def apply_override(values: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in a nested dict (the value parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected section.key=value, e.g. train.learning_rate=1e-4")
    *parents, leaf = key.split(".")
    if not parents or parents[0] not in SECTIONS:
        raise ConfigError(f"override {override!r}: the key must start with one of {', '.join(SECTIONS)}")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[leaf] = _numbers(yaml.safe_load(raw))


def _numbers(value: Any) -> Any:
    """`value` with exponent-only numbers (`1e-4`, which YAML 1.1 reads as text) made floats, recursively."""
    if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value):
        return float(value)
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    return value


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config, apply overrides, check every key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path}: no such file (see training/configs/ for examples)")
    try:
        values = _numbers(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML ({exc})") from exc
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config {path}: unknown sections {unknown}; expected {', '.join(SECTIONS)}")
    for override in overrides:
        apply_override(values, override)
    train = values.get("train") or {}
    if not train.get("output_dir"):
        raise ConfigError(f"config {path}: train.output_dir is required (where checkpoints and the result go)")
    return TrainConfig(
        model=_build(ModelOptions, values.get("model") or {}, "model"),
        data=_build(DataOptions, values.get("data") or {}, "data"),
        loss=_build(LossOptions, values.get("loss") or {}, "loss"),
        train=train,
        source=str(path),
    )
