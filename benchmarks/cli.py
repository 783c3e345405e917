"""The command line of `hpsv3 bench` and `python benchmarks/run.py` (one parser, one `main`)."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import textwrap
import time
from pathlib import Path

from hpsv3_serve.client_tls import add_tls_arguments
from hpsv3_serve.errors import HPSv3Error

from . import formats, latency, rl_step, soak, table, throughput
from . import generation as generation_task
from .cache import CacheError
from .formats import LIST_FORMATS, PAIR_FORMATS, DataError
from .metrics import CI_METHOD
from .preference import HUMAN_TIE_RULE, MODEL_TIE_RULE, run_pairs, run_ranking
from .report import Report
from .scoring import ScoringError

DESCRIPTION = """Benchmark a served HPSv3 model (a Triton endpoint, e.g. `hpsv3 serve`) over gRPC, or several reward
models side by side (--model hpsv3,pickscore,... against `hpsv3 serve --models ...`).

tasks:
  pairs       preference accuracy on pairs people judged: HPDv3, HPDv2, ImageReward or Pick-a-Pic files
  ranking     ranking accuracy over all pairs of human-ranked lists (HPDv2 or ImageReward test.json)
  table       the paper's table from finished pairs/ranking runs: models as rows, test sets as columns
  generation  mean score per prompt category and per generator: folders of images, a .txt prompt beside each
  latency     concurrency sweep: throughput, p50/p90/p99, errors, queue/compute of each ensemble step
  soak        sustained load on a local endpoint: every answer checked, nothing lost, server memory sampled
  rl-step     one RL step, 64 arrays → rewards: this client vs flow_grpo's reward-server route vs in-process
  throughput  the endpoint vs the in-process scorers vs the official inferencer, in one run, with the CPU split

Each scored (image, prompt) is appended to a JSONL cache (--cache) as it arrives, keyed by the model, the sha256
of the image file and the prompt: a rerun after a crash or a kill scores only what is not there yet and gives the
same result, and an image that appears in many pairs is scored once. Missing image files and items the
endpoint cannot score are counted, listed and left out of the numbers, never silently. Reports go to
OUTPUT/TASK.md (also printed), OUTPUT/TASK.json and, for generation, latency and soak, OUTPUT/TASK.png, each
written whole or not at all. Exit status: 0, 1 when some items could not be scored, 2 when the run could not be done.
"""
EPILOG = """examples:
  %(prog)s --endpoint 127.0.0.1:8001 pairs --data HPDv3/test.json --images-root HPDv3
  %(prog)s --endpoint 127.0.0.1:8001 ranking --data HPDv2/test.json --images-root HPDv2/test
  %(prog)s --endpoint 127.0.0.1:8001 --model hpsv3,pickscore,hpsv2 pairs --data HPDv3/test.json --images-root HPDv3
  %(prog)s table HPDv3=hpsv3-bench/pairs/pairs.json HPDv2=runs/hpdv2/ranking.json          # one table of runs
  %(prog)s --endpoint 127.0.0.1:8001 generation --images gen_images/    # DIR/GENERATOR/CATEGORY/*.png + .txt
  %(prog)s --endpoint 127.0.0.1:8001 latency --sweep 1,4,16,64 --requests 200
  %(prog)s --endpoint 127.0.0.1:8001 soak --minutes 10 --concurrency 32
  %(prog)s rl-step --tiny build/tiny                                      # starts both servers on loopback
  %(prog)s throughput --serve --artifacts build/tiny/onnx                 # starts tritonserver on loopback
  %(prog)s pairs --help                                                   # formats, ties, interval
"""
PAIRS_DOC = "Preference accuracy: how often mu is higher for the image people preferred."
RANKING_DOC = """Ranking accuracy over all pairs of human-ranked lists, as the official calc_rank_acc: every pair of
images of different human rank counts once (micro average over all lists).

  hpdv2        {"prompt", "image_path": [...], "rank": [...]}: HPDv2 test.json, rank 1 = best
  imagereward  {"prompt", "generations": [...], "ranking": [...]}: ImageReward test.json, rank 1 = best

Relative image paths start at --images-root (default: the data file's folder)."""
TASK_HELP = {
    "pairs": "preference accuracy on judged pairs",
    "ranking": "ranking accuracy over all pairs of ranked lists",
    "table": "models × test sets, from finished pairs/ranking runs",
    "generation": "mean score per category and generator",
    "latency": "throughput and latency against concurrency",
    "soak": "sustained load, every answer checked, server memory",
    "rl-step": "one RL step of arrays: this client vs the reward-server route vs in-process",
    "throughput": "the endpoint vs in-process vs the official inferencer, one run",
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text}")
    return value


def _levels(text: str) -> list[int]:
    try:
        return [_positive(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected levels like 1,2,4,8, got {text!r}") from exc


def _add_common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options valid before or after the task; a task's copy only overrides what it is given."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("endpoint and output (before or after the task)")
    group.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        default=default(None),
        help="gRPC address of the Triton server (required; hpsv3 serve listens on 127.0.0.1:8001)",
    )
    group.add_argument(
        "--model",
        default=default("hpsv3"),
        metavar="NAME[,NAME...]",
        help="served model(s) on the endpoint (default hpsv3); pairs, ranking and generation take several, e.g. "
        "hpsv3,pickscore,clip-h,aesthetic,hpsv2,imagereward (hpsv3 serve --models): one row or table per model",
    )
    group.add_argument(
        "--concurrency", type=_positive, default=default(16), metavar="N", help="requests in flight (default 16)"
    )
    group.add_argument("--timeout", type=float, default=default(120.0), metavar="S", help="s per request (default 120)")
    add_tls_arguments(group, default=default(None))
    group.add_argument("--output", type=Path, default=default(None), metavar="DIR", help="default hpsv3-bench/TASK")
    group.add_argument(
        "--cache",
        type=Path,
        default=default(None),
        metavar="FILE",
        help="score cache, JSONL (default OUTPUT/scores.jsonl), keyed by model: share one between tasks and runs; "
        "a rerun with more models scores only what they lack, and a model that scores differently is refused",
    )


def _add_data(task: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    task.add_argument("--data", type=Path, required=True, metavar="FILE", help="data file: .json, .jsonl or .parquet")
    task.add_argument(
        "--images-root",
        type=Path,
        metavar="DIR",
        help="folder that relative image paths start from (default: the data file's folder)",
    )
    task.add_argument(
        "--format",
        default="auto",
        choices=["auto", *formats],
        help="data format (default: told from the first record's fields)",
    )
    task.add_argument(
        "--tie-tolerance",
        type=float,
        default=0.0,
        metavar="X",
        help="|mu1 − mu2| ≤ X is a model tie (default 0: exactly equal scores)",
    )
    task.add_argument("--limit", type=_positive, metavar="N", help="use only the first N records of the file")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=raw)
    _add_common(parser, defaults=True)
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    rules = "\n\n".join(
        textwrap.fill(text, 110)
        for text in (f"Human ties: {HUMAN_TIE_RULE}.", f"Model ties: {MODEL_TIE_RULE}.", f"Interval: {CI_METHOD}.")
    )

    pairs = tasks.add_parser(
        "pairs", help=TASK_HELP["pairs"], formatter_class=raw, description=f"{PAIRS_DOC}\n\n{formats.__doc__}\n{rules}"
    )
    _add_data(pairs, PAIR_FORMATS)
    pairs.set_defaults(run=run_pairs)

    ranking = tasks.add_parser(
        "ranking", help=TASK_HELP["ranking"], formatter_class=raw, description=f"{RANKING_DOC}\n\n{rules}"
    )
    _add_data(ranking, LIST_FORMATS)
    ranking.set_defaults(run=run_ranking)

    combined = tasks.add_parser("table", help=TASK_HELP["table"], formatter_class=raw, description=table.__doc__)
    table.add_arguments(combined)
    combined.set_defaults(run=table.run_table, check=table.check_arguments)

    generation = tasks.add_parser(
        "generation", help=TASK_HELP["generation"], formatter_class=raw, description=generation_task.__doc__
    )
    generation.add_argument("--images", type=Path, required=True, metavar="DIR", help="the image folders")
    generation.add_argument(
        "--first-line",
        action="store_true",
        help="prompt = the first line of IMAGE.txt (the official generate/ scripts write the "
        "prompt, then the image name on a second line); default: the whole file, stripped",
    )
    generation.add_argument("--limit", type=_positive, metavar="N", help="use only the first N images of each category")
    generation.set_defaults(run=generation_task.run_generation)

    sweep = tasks.add_parser("latency", help=TASK_HELP["latency"], formatter_class=raw, description=latency.__doc__)
    sweep.add_argument(
        "--images",
        type=Path,
        nargs="*",
        default=[],
        metavar="PATH",
        help="image files or folders to send (default: 4 synthetic PNGs, 512² to 1344×768)",
    )
    sweep.add_argument("--prompt", default="a photo of a cat sitting on a sofa", help="the prompt of every request")
    sweep.add_argument(
        "--sweep",
        type=_levels,
        default=[1, 2, 4, 8, 16],
        metavar="C1,C2,...",
        help="concurrency levels (default 1,2,4,8,16)",
    )
    sweep.add_argument("--requests", type=_positive, default=64,
                       help="requests per level (perf_analyzer: per measurement window) (default 64)")  # fmt: skip
    sweep.add_argument("--load-generator", default="auto", choices=["auto", "asyncio", "perf_analyzer"],
                         help="auto: perf_analyzer when it is on PATH, else the asyncio generator")  # fmt: skip
    sweep.add_argument("--stability", type=_positive, default=10, metavar="PERCENT",
                       help="perf_analyzer only: windows count as stable within this %% of each other; raise it on "
                       "a busy machine, where it may fail to stabilise (default 10, perf_analyzer's)")  # fmt: skip
    sweep.set_defaults(run=latency.run_latency)

    load = tasks.add_parser("soak", help=TASK_HELP["soak"], formatter_class=raw, description=soak.__doc__)
    load.add_argument("--minutes", type=float, default=1.0, help=f"how long (default 1, at most {soak.MAX_MINUTES})")
    load.add_argument("--images", nargs="*", type=Path, default=[], metavar="PATH",
                      help="the rotating set: image files or folders (default: 4 synthetic PNGs)")  # fmt: skip
    load.add_argument("--prompt", action="append", default=None,
                      help="a prompt of the rotating set (repeat; default one)")  # fmt: skip
    load.add_argument("--tolerance", type=float, default=1e-4, help="largest |Δmu|, |Δsigma| from the lone answer")
    load.add_argument("--sample-s", type=float, default=5.0, help="seconds between memory samples (default 5)")
    load.add_argument("--kill", type=soak.parse_kill, action="append", default=[], metavar="MODEL@SECONDS",
                      help="inject a fault: SIGKILL a Python stub of MODEL at that time (repeat for more)")  # fmt: skip
    load.set_defaults(run=soak.run_soak)

    step = tasks.add_parser("rl-step", help=TASK_HELP["rl-step"], formatter_class=raw, description=rl_step.__doc__)
    rl_step.add_arguments(step, _positive)
    step.set_defaults(run=rl_step.run_rl_step, check=rl_step.check_arguments)

    compare = tasks.add_parser(
        "throughput", help=TASK_HELP["throughput"], formatter_class=raw, description=throughput.__doc__
    )
    throughput.add_arguments(compare, _positive)
    compare.set_defaults(run=throughput.run_throughput, check=throughput.check_arguments)

    for task in (pairs, ranking, combined, generation, sweep, load, step, compare):
        _add_common(task, defaults=False)
    return parser


def _fact(value: object) -> str:
    """A run fact; counts by model (several models) as `hpsv3 12 / pickscore 0`."""
    return " / ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _run_line(run: dict) -> str:
    facts = ", ".join(f"{key.replace('_', ' ')} {_fact(value)}" for key, value in run.items() if key != "command")
    return f"\nRun: {facts}.\n"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if getattr(args, "check", None):  # a task that can start its own servers says what it needs
        args.check(parser, args)
    elif not args.endpoint:
        parser.error("--endpoint HOST:PORT is required (the gRPC address of the server, e.g. 127.0.0.1:8001)")
    plain = (latency.run_latency, soak.run_soak, rl_step.run_rl_step, throughput.run_throughput)
    if args.run in plain and (args.tls_root_cert or args.tls_client_cert):
        parser.error("latency, soak, rl-step and throughput drive plain gRPC (soak: loopback only); the --tls-* "
                     "flags are for pairs, ranking and generation")  # fmt: skip
    args.command = shlex.join([parser.prog, *(sys.argv[1:] if argv is None else argv)])
    args.output = args.output or Path("hpsv3-bench") / args.task
    args.cache = args.cache or args.output / "scores.jsonl"
    started = time.perf_counter()
    try:
        report: Report = args.run(args)
    except (DataError, CacheError, ScoringError, HPSv3Error) as exc:  # TlsConfigError is an HPSv3Error
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; what was scored is in {args.cache}: rerun to go on", file=sys.stderr)
        return 130
    served = {} if args.task == "table" else {"endpoint": args.endpoint, "model": args.model}  # table scores nothing
    report.result["run"] = {
        **served,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        **report.result["run"],
        "command": args.command,
    }
    report.markdown += _run_line(report.result["run"])
    report.publish(args.output, parser.prog)
    if report.failed:
        print(f"{parser.prog}: {report.failed} item(s) could not be scored (listed in the report)", file=sys.stderr)
        return 1
    return 0
