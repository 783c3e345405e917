"""One training run, top to bottom: config → model + data → Trainer → evaluation → servable checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainingArguments

from hpsv3_serve.files import write_text_atomic
from hpsv3_serve.prompt import PromptTokenizer

from .config import TrainConfig
from .data import PairDataset, collate_pairs, read_pairs
from .errors import ConfigError
from .export import write_output
from .model_setup import initial_model, make_trainable, trainable_summary
from .trainer import RewardTrainer, last_checkpoint, pair_accuracy

METRICS_FILE = "metrics.json"
HANDLED_BY_MODEL = ("gradient_checkpointing", "activation_checkpointing")
FIXED_ARGS = {"remove_unused_columns": False}  # the collator needs every field of a pair


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """TrainingArguments from the `train` section (checkpointing is a model option: the towers do it)."""
    for key in HANDLED_BY_MODEL:
        if config.train.get(key):
            raise ConfigError(f"train.{key}: set model.gradient_checkpointing=true instead (the towers checkpoint)")
    values = {k: v for k, v in config.train.items() if k not in HANDLED_BY_MODEL and k != "resume_from_checkpoint"}
    if not config.data.eval:
        values["eval_strategy"] = "no"
    try:
        return TrainingArguments(**values, **FIXED_ARGS)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train: {exc} (the train section is transformers.TrainingArguments)") from exc


def resume_point(config: TrainConfig) -> str | None:
    """`train.resume_from_checkpoint`: a checkpoint folder, or true for the newest one in output_dir."""
    resume = config.train.get("resume_from_checkpoint")
    if resume is True:
        found = last_checkpoint(config.train["output_dir"])
        if found is None:
            raise ConfigError(
                f"resume_from_checkpoint=true but {config.train['output_dir']} has no complete checkpoint-N folder "
                "(one with trainer_state.json)"
            )
        return found
    if resume and not Path(resume).is_dir():
        raise ConfigError(f"train.resume_from_checkpoint {resume}: no such checkpoint folder")
    return resume or None


def build_trainer(config: TrainConfig) -> tuple[RewardTrainer, Path, torch.Tensor | None]:
    """(trainer, base folder, lm_head to carry) with the model made trainable and the data read."""
    args = training_arguments(config)
    model, base, lm_head = initial_model(config.model)
    tokenizer = PromptTokenizer.from_base(base)
    data = config.data

    def dataset(files: list[str], threshold: float | None) -> PairDataset:
        return PairDataset(read_pairs(files, data.images_root, threshold, data.tied_threshold), tokenizer)

    if not data.train:
        raise ConfigError("data.train: give at least one HPDv3 pair JSON file")
    train_set = dataset(data.train, data.confidence_threshold)
    eval_set = dataset(data.eval, None) if data.eval else None  # held-out pairs are all evaluated
    model = make_trainable(model, config.model)
    print(f"hpsv3 train: {len(train_set)} training pairs, {len(eval_set or [])} held-out; {trainable_summary(model)}")
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collate_pairs,
        compute_metrics=pair_accuracy,
        loss_type=config.loss.type,
        reward_row_lr=config.loss.reward_row_lr,
    )
    return trainer, base, lm_head


def final_evaluation(trainer: RewardTrainer) -> dict:
    """Held-out metrics of the final weights: the evaluation Trainer ran at the last step, else a new one."""
    step = trainer.state.global_step
    done = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry and entry["step"] == step]
    return {key: value for key, value in done[-1].items() if key != "step"} if done else trainer.evaluate()


def final_model(trainer: RewardTrainer, config: TrainConfig) -> torch.nn.Module:
    """The trained model with whole tensors: as is, or (DeepSpeed ZeRO-3, weights partitioned) gathered into a
    fresh copy. Every rank must call this (the gather is collective)."""
    if not trainer.is_deepspeed_enabled or trainer.accelerator.deepspeed_config["zero_optimization"]["stage"] < 3:
        return trainer.model
    state = trainer.accelerator.get_state_dict(trainer.deepspeed)  # needs stage3_gather_16bit_weights_on_model_save
    if not trainer.args.should_save:
        return trainer.model  # only the saving process writes the output
    model = make_trainable(initial_model(config.model)[0], config.model)
    model.load_state_dict(state)
    return model


def run(config: TrainConfig) -> dict:
    """Train, evaluate on the held-out pairs, write the servable checkpoint; returns the metrics written."""
    trainer, base, lm_head = build_trainer(config)
    result = trainer.train(resume_from_checkpoint=resume_point(config))
    metrics = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    if trainer.eval_dataset is not None:
        metrics |= final_evaluation(trainer)
    out = Path(config.train["output_dir"])
    model = final_model(trainer, config)
    if trainer.args.should_save:
        checkpoint = write_output(model, out, base, config.to_dict(), config.model.dtype, lm_head)
        metrics["checkpoint"] = str(checkpoint)
        write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=1) + "\n")
    return metrics
