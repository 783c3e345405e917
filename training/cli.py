"""The `hpsv3 train` / `python training/train.py` command line."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from hpsv3_serve.errors import HPSv3Error

from .config import load_config
from .errors import ConfigError, DataError

DESCRIPTION = """Train or fine-tune an HPSv3 reward model on pairwise preferences (HPDv3 pair JSON: prompt, path1 =
the preferred image, path2) with Hugging Face Trainer, and write a checkpoint the whole stack serves:
OUT/HPSv3.safetensors (official layout), OUT/base/ (config + tokenizer), OUT/training_config.yaml,
OUT/metrics.json (held-out pair accuracy); Trainer checkpoints and TensorBoard logs also go to OUT."""
EPILOG = """examples:
  hpsv3 make-tiny build/tiny && python -m hpsv3_training.synthetic build/colours   # CPU smoke data
  hpsv3 train --config training/configs/tiny.yaml                                 # minutes on a laptop
  hpsv3 train --config training/configs/tiny.yaml train.max_steps=20 loss.type=bt  # dotted overrides
  hpsv3 train --config training/configs/tiny.yaml train.resume_from_checkpoint=true # continue the newest
  deepspeed --num_gpus 8 training/train.py --config training/configs/HPSv3_7B.yaml   # the official recipe
  torchrun --nproc_per_node 8 training/train.py --config training/configs/HPSv3_7B.yaml
then: hpsv3 serve --checkpoint OUT --base OUT/base   and   hpsv3 bench --endpoint 127.0.0.1:8001 pairs --data test.json

overrides are section.key=value, the value read as YAML; sections: model, data, loss, train (train is
transformers.TrainingArguments). docs/TRAINING.md explains every option."""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config (training/configs/tiny.yaml, HPSv3_7B.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.learning_rate=1e-5")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # set by `deepspeed`
    return parser


def _resume_advice(output_dir: str) -> str:
    """What a rerun after an interruption continues from (checkpoints are complete or ignored)."""
    from .trainer import last_checkpoint

    found = last_checkpoint(output_dir)
    if found is None:
        return f"no complete checkpoint in {output_dir} yet: rerun the same command to start again"
    return f"rerun with train.resume_from_checkpoint=true to continue from {found}"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    name = prog or "hpsv3 train"
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        from .pipeline import run  # torch + transformers: only when training

        try:
            metrics = run(config)
        except KeyboardInterrupt:  # Ctrl-C: finished checkpoints stay, a half-saved one is passed over on resume
            print(f"{name}: interrupted; {_resume_advice(config.train['output_dir'])}", file=sys.stderr)
            return 130
    except (ConfigError, DataError, HPSv3Error) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    if "checkpoint" in metrics:
        out = config.train["output_dir"]
        print(f"serve it: hpsv3 serve --checkpoint {metrics['checkpoint']} --base {out}/base", file=sys.stderr)
    return 0
