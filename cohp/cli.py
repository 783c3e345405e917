"""The parser and main of `python cohp/run.py` / `hpsv3 cohp` (see --help)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hpsv3_client import ModelNotReadyError, ServerUnavailableError
from hpsv3_serve.client_tls import TlsConfigError, add_tls_arguments, tls_options
from hpsv3_serve.files import write_text_atomic

if TYPE_CHECKING:
    from .generators import Generator
    from .loop import Settings

DESCRIPTION = """\
Chain-of-Human-Preference: better images from the HPSv3 endpoint (or another served reward model, --reward-model)
with no training.
1. model preference: every generator samples --images-per-model images; the endpoint scores them; the
   generator with the best mean score wins, and its best image is kept.
2. sample preference: --rounds img2img rounds of the winner from the kept image (--strengths, one per
   round), --images-per-round images each; an image that beats the kept one replaces it.
Generators load one at a time and are freed after use; each image is scored while the next is generated.
Per prompt, OUTPUT/NNNN-prompt-words/ gets final.png, every intermediate image (models/, rounds/),
report.json (per model mean/max, per round best, chosen path, seeds, timings) and contact_sheet.png.
"""

EPILOG = """\
examples:
  python cohp/run.py --server 127.0.0.1:8001 --prompt "a red fox in the snow" --device cuda
  python cohp/run.py --server 127.0.0.1:8001 --prompts prompts.txt --models flux,sd3   # resumes when rerun
  python cohp/run.py --server 127.0.0.1:8001 --prompt "a cat" --best-of 8 --models flux # selection only
  python cohp/run.py --server 127.0.0.1:8001 --prompt "a cat" --reward-model pickscore  # another judge
  python cohp/run.py --server 127.0.0.1:8001 --prompt "a cat" --tiny   # tiny random pipelines, offline, CPU
"""


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 0.8,0.8,0.5,0.5, not {text!r}"
        ) from None
    if not all(0.0 < value <= 1.0 for value in values):
        raise argparse.ArgumentTypeError(f"strengths are in (0, 1], not {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from .generators import DEFAULT_MODELS, REGISTRY

    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", required=True, metavar="HOST:PORT", help="gRPC address of the hpsv3 endpoint")
    parser.add_argument(
        "--reward-model",
        "--reward_model",
        "--model-name",
        dest="reward_model",
        default="hpsv3",
        metavar="NAME",
        help="the served reward model that judges the images (default: hpsv3): hpsv3, or another judge served by "
        "hpsv3 serve --models (pickscore, hpsv2, imagereward, clip-h, aesthetic; the official CoHP offers hpsv3, "
        "hpsv2, imagereward, pickscore)",
    )
    add_tls_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt")
    source.add_argument("--prompts", type=Path, metavar="FILE", help='one prompt per line (or JSONL {"prompt"})')
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated generators, from: {', '.join(REGISTRY)} (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="img2img rounds (default: 4; 0 = selection only)")
    parser.add_argument(
        "--strengths",
        type=_floats,
        default=(0.8, 0.8, 0.5, 0.5),
        help="img2img strength per round (default: 0.8,0.8,0.5,0.5)",
    )
    parser.add_argument("--images-per-model", type=_positive, default=2, help="samples per generator (default: 2)")
    parser.add_argument("--images-per-round", type=_positive, default=4, help="samples per round (default: 4)")
    parser.add_argument(
        "--best-of", type=_positive, metavar="N", help="selection only: one generator, N samples, keep the best"
    )
    parser.add_argument("--seed", type=int, default=0, help="run seed; per-image seeds derive from it (default: 0)")
    parser.add_argument("--output", type=Path, default=Path("cohp-output"), help="output folder (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--tiny",
        nargs="?",
        const=True,
        metavar="CACHE",
        help="use tiny random-weight stand-ins of the generators, built offline (in CACHE, default "
        "$HPSV3_CACHE_DIR/cohp-tiny or ~/.cache/hpsv3_serve/cohp-tiny): tests and dry runs on CPU",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the endpoint at start")
    return parser


def _settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    import torch

    from .loop import Settings

    rounds, per_model = args.rounds, args.images_per_model
    if args.best_of is not None:
        if len(args.model_list) != 1:
            parser.error(f"--best-of needs exactly one generator in --models, not {len(args.model_list)}")
        rounds, per_model = 0, args.best_of
    if rounds < 0:
        parser.error(f"--rounds must be 0 or more, not {rounds}")
    if len(args.strengths) < rounds:
        parser.error(f"--strengths gives {len(args.strengths)} values for {rounds} rounds: give one per round")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Settings(rounds, args.strengths[:rounds], per_model, args.images_per_round, args.seed, device)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.model_list = [name.strip() for name in args.models.split(",") if name.strip()]
    settings = _settings(args, parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from .generators import check_strengths, resolve
    from .resume import read_prompts

    try:
        prompts = [args.prompt] if args.prompt is not None else read_prompts(args.prompts)
        generators = resolve(args.model_list, tiny=args.tiny is not None)
        check_strengths(generators, settings.strengths)
        tls = tls_options(args)
    except (OSError, ValueError, TlsConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _quiet_libraries()
    try:
        return _run(args, prompts, generators, settings, tls)
    except KeyboardInterrupt:
        print("interrupted: finished prompts are kept; rerun the same command to resume", file=sys.stderr)
        return 130


def _run(
    args: argparse.Namespace, prompts: list[str], generators: list[Generator], settings: Settings, tls: dict
) -> int:
    """Check the endpoint, then run each prompt not finished yet; write OUTPUT/summary.json. A prompt that fails
    (refused by the endpoint's rules, no generator, a scoring error, anything it raises) is reported and skipped:
    the other prompts still run, and the exit status is 1."""
    from hpsv3_serve.prompt import check_prompt
    from hpsv3_serve.results import printable

    from .generators import tiny_weights
    from .loop import run_prompt
    from .resume import finished, prompt_folder
    from .scoring import BackgroundScorer
    from .tiny_pipelines import default_root

    with BackgroundScorer(args.server, model=args.reward_model, **tls) as scorer:
        try:
            scorer.check(args.timeout)  # before any generation
        except (ServerUnavailableError, ModelNotReadyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.tiny is not None:
            generators = tiny_weights(generators, default_root() if args.tiny is True else Path(args.tiny))
        summary, failed = [], 0
        for index, prompt in enumerate(prompts):
            folder = prompt_folder(args.output, index, prompt)
            entry = {"prompt": printable(prompt), "folder": folder.name}
            report = finished(folder, prompt, args.reward_model)
            if report is not None:
                print(f"skip {folder} (finished: {report['final']['score']:.4f})", file=sys.stderr)
            else:
                try:
                    report = run_prompt(check_prompt(prompt), generators, settings, scorer, folder)
                except Exception as exc:  # this prompt fails alone; the next one runs
                    failed += 1
                    summary.append({**entry, "error": f"{type(exc).__name__}: {exc}"})
                    print(f"error: prompt {index + 1}: {exc}", file=sys.stderr)
                    continue
                print(f"done {folder}: {report['best_model']}, final score {report['final']['score']:.4f}")
            summary.append({**entry, "best_model": report["best_model"], "score": report["final"]["score"]})
    write_text_atomic(args.output / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    if failed:
        print(f"{failed} of {len(prompts)} prompts failed (see summary.json)", file=sys.stderr)
    return 1 if failed else 0


def _quiet_libraries() -> None:
    """diffusers/transformers chatter (progress bars, deprecations) would drown the run's own progress."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
