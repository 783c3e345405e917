"""`hpsv3`: the command line. Each verb does one job; `hpsv3 VERB --help` explains it."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .client_tls import TlsConfigError, add_tls_arguments, tls_options
from .defaults import DEFAULT_BASE, DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT, DTYPE_NAMES
from .limits import DEFAULT_LIMITS, InputLimits
from .network import is_loopback
from .results import format_table

EPILOG = """examples:
  hpsv3 make-tiny build/tiny                      # tiny offline model for tests and demos
  hpsv3 score cat.png dog.jpg --prompt "a cat"    # official MizzenAI/HPSv3 from the hub, in-process
  hpsv3 serve --checkpoint build/tiny/HPSv3-tiny.safetensors --base build/tiny/base   # Triton on :8001
  hpsv3 score --endpoint 127.0.0.1:8001 --input pairs.jsonl --format jsonl           # over gRPC
  hpsv3 export --checkpoint C --base B --out onnx/ # ONNX stages + parity report
  hpsv3 export --checkpoint C --base B --vllm vllm/  # a folder `vllm serve` scores faithfully
  hpsv3 score cat.png --backend vllm               # in-process on vLLM (pip install vllm)
  hpsv3 score cat.png --prompt "a cat" --model pickscore   # another reward model (README: Other reward models)
  hpsv3 score cat.png --device cuda --dtype bfloat16   # the fast engine on a GPU (--backend fast)
  hpsv3 bench --endpoint 127.0.0.1:8001 pairs --data HPDv3/test.json   # accuracy, ranking, generators, latency
  hpsv3 train --config training/configs/tiny.yaml  # train / fine-tune on pair JSON (hpsv3 train --help)
  hpsv3 cohp --server 127.0.0.1:8001 --prompt "a red fox"   # better images: generators + img2img, scored
  hpsv3 demo-ui --endpoint 127.0.0.1:8001          # web page on http://127.0.0.1:7860: upload, score, compare
"""


def _read_input_file(path: Path, images_root: Path | None) -> Iterator[tuple[str, str] | str]:
    """(image, prompt) per JSONL line, or an error string naming the line (a bad line never ends the file)."""
    root = images_root or path.resolve().parent
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                image, prompt = record["image"], record.get("prompt", "")
            except UnicodeDecodeError as exc:
                yield f"{path}:{number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at {exc.start})"
                continue
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:  # JSON, shape, nesting
                yield f'{path}:{number}: expected {{"image": ..., "prompt": ...}} ({exc})'
                continue
            if isinstance(image, str) and "://" not in image and not image.startswith("data:"):
                image = str(root / image) if not Path(image).is_absolute() else image
            yield (image, prompt)


def _resolve_models(args: argparse.Namespace) -> tuple[Path, Path]:
    """(checkpoint file, base folder) for --checkpoint/--revision and --base/--base-revision."""
    from .checkpoint import resolve_base, resolve_checkpoint

    return resolve_checkpoint(args.checkpoint, revision=args.revision), resolve_base(args.base, args.base_revision)


def cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .errors import HPSv3Error
    from .results import ScoreResult

    pairs: list[tuple[str, str] | str] = [(image, args.prompt) for image in args.images]
    if args.input:
        pairs += list(_read_input_file(args.input, args.images_root))
    if not pairs:
        print("hpsv3 score: nothing to score; give IMAGE paths or --input FILE.jsonl (see --help)", file=sys.stderr)
        return 2
    good = [pair for pair in pairs if isinstance(pair, tuple)]
    images, prompts = [image for image, _ in good], [prompt for _, prompt in good]
    stop_engines = contextlib.ExitStack()  # engines with processes of their own (vLLM) stop before we exit
    if args.model != "hpsv3" and args.backend not in (None, "torch"):
        print(f"hpsv3 score: --model {args.model} scores in-process on torch (or served: --endpoint), not on "
              f"--backend {args.backend}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        if args.endpoint:
            from hpsv3_client import HPSv3Client

            tls = tls_options(args)
            client = HPSv3Client(
                args.endpoint, model=args.model, concurrency=args.concurrency, timeout_s=args.timeout,
                limits=_limits(args), **tls,
            )  # fmt: skip
            scored = iter(client.score(images, prompts, progress=True))
        elif args.model != "hpsv3":
            scorer = stop_engines.enter_context(_judge_scorer(args))
            scored = scorer.iter_score(images, prompts)
        else:
            scorer = stop_engines.enter_context(_scorer(args))
            scored = scorer.iter_score(images, prompts)
    except HPSv3Error as exc:
        print(f"hpsv3 score: {exc}", file=sys.stderr)
        return 2
    progress = tqdm(total=len(pairs), unit="img", disable=None if not args.endpoint else True, file=sys.stderr)
    rows = []
    with stop_engines:
        for pair in pairs:
            result = next(scored) if isinstance(pair, tuple) else ScoreResult(image="", prompt="", error=pair)
            row = result.to_dict()
            rows.append(row)
            progress.update()
            if args.format == "jsonl":
                print(json.dumps(row, ensure_ascii=False), flush=True)
    progress.close()
    if args.format == "table":
        print(format_table(rows))
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"hpsv3 score: {failed} of {len(rows)} items failed (see their error)", file=sys.stderr)
    return 1 if failed else 0


def _judge_scorer(args: argparse.Namespace):
    """Another reward model in-process (`--model`); --checkpoint / --base name its sources when they are given."""
    from .judges import load_judge

    weights = None if args.checkpoint == DEFAULT_CHECKPOINT else args.checkpoint
    base = None if args.base == DEFAULT_BASE else args.base
    return load_judge(args.model, weights, base, args.device, args.dtype, args.batch_size, _limits(args),
                      args.revision, args.base_revision)  # fmt: skip


def _scorer(args: argparse.Namespace):
    """The in-process scorer for --backend (default: fast on CUDA, torch on CPU); onnx and vllm run a folder
    exported once from the checkpoint and cached by content hash."""
    from .defaults import cache_dir
    from .engines import default_backend
    from .scorer import Scorer

    checkpoint, base = _resolve_models(args)
    backend = args.backend or default_backend(args.device)
    say = lambda text: print(f"hpsv3 score: {text}", file=sys.stderr)  # noqa: E731
    options: dict = {"compile_layers": args.compile, "cuda_graphs": args.cuda_graphs}
    if backend == "onnx":
        from hpsv3_repository.serve import ensure_artifacts

        options = {"folder": ensure_artifacts(checkpoint, base, cache_dir() / "score-onnx", say)}
    elif backend == "vllm":
        from hpsv3_export.vllm_export import ensure_vllm_folder

        options = {"folder": ensure_vllm_folder(checkpoint, base, cache_dir() / "score-vllm", say)}
    return Scorer.from_pretrained(
        checkpoint, base, args.device, args.dtype, args.batch_size, _limits(args), backend, **options
    )


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


def cmd_export(args: argparse.Namespace) -> int:
    from .errors import HPSv3Error

    if not (args.out or args.vllm):
        print("hpsv3 export: say where: --out DIR (ONNX stages) and/or --vllm DIR (vLLM folder)", file=sys.stderr)
        return 2
    try:
        checkpoint, base = _resolve_models(args)
        if args.out:
            from hpsv3_export.onnx_export import export_onnx  # onnx is not needed for --vllm alone

            manifest = export_onnx(checkpoint, base, args.out, args.dtype, args.tolerance)
            summary = {"out": str(args.out), "parity": manifest["parity"], "seconds": manifest["export_seconds"]}
            print(json.dumps(summary))
        if args.vllm:
            from hpsv3_export.vllm_export import export_vllm

            manifest = export_vllm(checkpoint, base, args.vllm)
            print(json.dumps({"vllm": str(args.vllm), "seconds": manifest["export_seconds"]}))
    except HPSv3Error as exc:
        print(f"hpsv3 export: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hpsv3_repository.admin import read_admin_key
    from hpsv3_repository.launcher import GrpcTls
    from hpsv3_repository.serve import ServeOptions, default_workdir, prepare_server, serve_forever

    from .errors import HPSv3Error

    if bool(args.grpc_tls_cert) != bool(args.grpc_tls_key):
        print("hpsv3 serve: --grpc-tls-cert and --grpc-tls-key go together", file=sys.stderr)
        return 2
    tls = GrpcTls(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca) if args.grpc_tls_cert else None
    try:
        options = ServeOptions(
            args.host, args.grpc_port, args.http_port, args.metrics_port, args.instances,
            limits=_limits(args), tls=tls, max_queue_size=args.max_queue, allocator=args.allocator,
            admin_key=read_admin_key(args.admin_key_file) if args.admin_key_file else None,
            http_address=args.http_address, metrics_address=args.metrics_address,
        )  # fmt: skip
        options.judges, options.rewards = _served_judges(args), args.rewards
        if options.judges:
            names = ", ".join(judge.name for judge in options.judges)
            together = " and rewards (every score at once)" if args.rewards else ""
            print(f"hpsv3 serve: also serving {names} (hpsv3 score --model NAME){together}")
        server = prepare_server(*_resolve_models(args), args.workdir or default_workdir(), options)
        return serve_forever(server)
    except HPSv3Error as exc:
        print(f"hpsv3 serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the server ran (export, download): an unfinished export is redone next time
        print("hpsv3 serve: interrupted before serving; rerun the same command to go on", file=sys.stderr)
        return 130


def _served_judges(args: argparse.Namespace) -> tuple:
    """`--models` (hpsv3 always; the others as `JudgeSource`s) with their `--judge-weights` / `--judge-base`."""
    from hpsv3_repository.build import parse_judges

    return parse_judges(args.models, args.judge_weights, args.judge_base)


def cmd_demo_ui(args: argparse.Namespace) -> int:
    from hpsv3_demo.launch import REPO_EXAMPLES, run, streamlit_command

    if not is_loopback(args.host):
        fetch = "" if args.no_urls else "; it also fetches pasted image URLs from this machine (see --no-urls)"
        print(f"hpsv3 demo-ui: WARNING: binding to {args.host} lets anyone who reaches this machine use the page and "
              f"the endpoint behind it{fetch}", file=sys.stderr)  # fmt: skip
    examples = args.examples if args.examples is not None else REPO_EXAMPLES
    print(f"hpsv3 demo-ui: http://{args.host}:{args.port} scores on {args.endpoint} (Ctrl-C stops)", file=sys.stderr)
    try:
        tls = tls_options(args)  # checked here, where the user sees the error, not on the page
    except TlsConfigError as exc:
        print(f"hpsv3 demo-ui: {exc}", file=sys.stderr)
        return 2
    return run(streamlit_command(args.endpoint, args.host, args.port, args.timeout, not args.no_urls, examples, tls))


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="HPSv3 .safetensors file, folder or hub id")
    parser.add_argument("--base", default=DEFAULT_BASE, help="Qwen2-VL folder or hub id (config + tokenizer only)")
    parser.add_argument("--revision", help="commit hash, branch or tag of a --checkpoint hub id (none: its main "
                        "branch; pin a commit hash so that every host loads the same bytes)")  # fmt: skip
    parser.add_argument("--base-revision", help="commit hash, branch or tag of a --base hub id (none: its main branch)")


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """Per-item input limits (hpsv3_serve.limits); an item past one fails alone with an error naming it."""
    group = parser.add_argument_group("input limits (an item past one fails alone, naming the limit)")
    group.add_argument("--max-image-bytes", type=int, default=DEFAULT_LIMITS.max_image_bytes,
                       help="largest encoded image file")  # fmt: skip
    group.add_argument("--max-image-pixels", type=int, default=DEFAULT_LIMITS.max_image_pixels,
                       help="largest width × height, checked from the header before decoding")  # fmt: skip
    group.add_argument("--max-prompt-tokens", type=int, default=DEFAULT_LIMITS.max_prompt_tokens,
                       help="longest prompt, in tokens")  # fmt: skip
    group.add_argument("--max-prompt-bytes", type=int, default=DEFAULT_LIMITS.max_prompt_bytes,
                       help="longest prompt in UTF-8 bytes, checked before tokenising")  # fmt: skip


def _limits(args: argparse.Namespace) -> InputLimits:
    return InputLimits(
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        max_prompt_tokens=args.max_prompt_tokens,
        max_prompt_bytes=args.max_prompt_bytes,
    )


def build_parser() -> argparse.ArgumentParser:
    from hpsv3_repository.allocator import CHOICES as ALLOCATORS

    from .engines import BACKENDS
    from .judges import JUDGES

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
        help="score images for prompts (in-process, or on an --endpoint)",
        description="Score (image, prompt) pairs with the reward model in this process. Prints mu (the "
        "score; higher is preferred; no fixed range) and sigma (its uncertainty). Items that cannot be "
        "scored get an error and the rest are still scored; the exit status is 1 if any item failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("images", nargs="*", help="image paths, http(s) URLs or data: URLs")
    score.add_argument("--prompt", default="", help="prompt for the IMAGE arguments")
    score.add_argument("--input", type=Path, help='JSONL file, one {"image": ..., "prompt": ...} per line')
    score.add_argument("--images-root", type=Path, help="folder for relative paths in --input (default: its folder)")
    _add_model_arguments(score)
    score.add_argument("--model", default="hpsv3", choices=list(JUDGES),
                       help="reward model; for another than hpsv3, --checkpoint / --base name its weights and base "
                       "(default: its hub ids; see README, Other reward models); with --endpoint, the served "
                       "model of that name (hpsv3 serve --models)")  # fmt: skip
    score.add_argument(
        "--backend", choices=BACKENDS,
        help="in-process engine: torch (the reference), fast (the same weights run lean: fused layers, last layer "
        "at <|Reward|> only, CUDA graphs), onnx (exports the ONNX stages once, then ONNX Runtime on CPU) or vllm "
        "(exports a vLLM folder once, then vLLM's pooling runner; needs vllm installed, the device is vLLM's); "
        "default: fast with --device cuda, else torch",
    )  # fmt: skip
    score.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (torch and fast backends)")
    score.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="fast backend: torch.compile the layers (minutes of warm-up, then faster)")  # fmt: skip
    score.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                       help="fast backend on CUDA: replay the language tower from CUDA graphs")  # fmt: skip
    score.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPE_NAMES), help="weights dtype (rm_head stays fp32)"
    )
    score.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="pairs per forward pass")
    score.add_argument("--format", default="table", choices=["table", "jsonl"], help="output format")
    score.add_argument("--endpoint", metavar="HOST:PORT[,HOST:PORT...]",
                       help="score on served endpoint(s) instead of in-process; several share the load and "
                       "cover for each other")  # fmt: skip
    score.add_argument("--concurrency", type=int, default=16, help="requests in flight (--endpoint)")
    score.add_argument("--timeout", type=float, default=60.0, help="seconds per request (--endpoint)")
    add_tls_arguments(score)
    _add_limits(score)
    score.set_defaults(func=cmd_score)

    export = verbs.add_parser(
        "export",
        help="export the vision encoder, language tower and reward head to ONNX",
        description="Export the three stages to ONNX (opset 23), run each stage and the whole chain against "
        "the PyTorch reference, and write manifest.json with the parity report. Fails when parity is off.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_arguments(export)
    export.add_argument("--out", type=Path, help="ONNX artifacts folder (for hpsv3 serve, the CPU target)")
    export.add_argument(
        "--vllm", type=Path, metavar="DIR",
        help="also/instead write a vLLM model folder: `vllm serve DIR --runner pooling` and `hpsv3 score "
        "--backend vllm` return the official scores (1-D positions, rm_head as the pooling head)",
    )  # fmt: skip
    export.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="ONNX weights dtype")
    export.add_argument("--tolerance", type=float, help="max |Δ| allowed vs PyTorch (default 1e-4 fp32)")
    export.set_defaults(func=cmd_export)

    serve = verbs.add_parser(
        "serve",
        help="serve the model with Triton (gRPC, HTTP, metrics)",
        description="Export the ONNX stages if missing or stale (content hash), render the Triton model "
        "repository and run the tritonserver shipped in nvidia-pytriton until Ctrl-C / SIGTERM. Binds to "
        "127.0.0.1 unless --host says otherwise; with gRPC TLS, HTTP and metrics stay on 127.0.0.1 unless "
        "--http-address / --metrics-address say otherwise. Loading, unloading and listing models, "
        "shared memory, trace and log settings need the header hpsv3-admin-key: a random key made for each start "
        "that only this process holds, or yours with --admin-key-file. Inference, health, metadata, statistics "
        "and metrics stay open (docs/RELIABILITY.md, Security model).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_arguments(serve)
    judges = serve.add_argument_group("other reward models (README: Other reward models)")
    judges.add_argument("--models", default="hpsv3", metavar="NAME[,NAME...]",
                        help=f"reward models to serve, each its own Triton model named as it, and together in "
                        f"`rewards` (one request, every score, the image decoded once); hpsv3 is always served; "
                        f"choose from {', '.join(JUDGES)}")  # fmt: skip
    judges.add_argument(
        "--rewards",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with other models: serve `rewards` too (every score from one request); --no-rewards serves the judges "
        "alone, without its second copy of their weights",
    )
    judges.add_argument("--judge-weights", action="append", default=[], metavar="NAME=PATH",
                        help="a judge's weights (file, folder or hub id; default: its hub id); repeatable")  # fmt: skip
    judges.add_argument("--judge-base", action="append", default=[], metavar="NAME=PATH",
                        help="what a judge is built on (CLIP processor / backbone; default: its hub id)")  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it: be sure)")
    plain = "when not given: --host, or 127.0.0.1 with gRPC TLS (these ports have no TLS)"
    serve.add_argument("--http-address", help=f"address of the HTTP port; {plain}")
    serve.add_argument("--metrics-address", help=f"address of the metrics port; {plain}")
    serve.add_argument("--admin-key-file", type=Path,
                       help="file holding your key for the control APIs, sent as header hpsv3-admin-key (make one: "
                       "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > admin.key); when not given: "
                       "a random key per start that nobody else holds")  # fmt: skip
    serve.add_argument("--grpc-port", type=int, default=8001, help="gRPC port")
    serve.add_argument("--http-port", type=int, default=8000, help="HTTP port")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    serve.add_argument("--instances", type=int, default=2, help="preprocessing instances (CPU decode/resize)")
    serve.add_argument("--max-queue", type=int, default=512,
                       help="most requests waiting; more are refused at once (clients retry)")  # fmt: skip
    serve.add_argument("--workdir", type=Path, help="artifacts, repository, log (default $HPSV3_CACHE_DIR/serve, "
                       "or ~/.cache/hpsv3_serve/serve)")  # fmt: skip
    serve.add_argument("--allocator", choices=ALLOCATORS, default="auto",
                       help="malloc preloaded into tritonserver (its stubs keep glibc's): auto = tcmalloc when "
                       "installed (apt-get install libtcmalloc-minimal4), which keeps its memory flat under "
                       "sustained load (docs/RELIABILITY.md), else glibc")  # fmt: skip
    tls = serve.add_argument_group("gRPC TLS (clients: hpsv3 score --tls-root-cert ...)")
    tls.add_argument("--grpc-tls-cert", type=Path, help="server certificate (PEM); turns TLS on")
    tls.add_argument("--grpc-tls-key", type=Path, help="server private key (PEM)")
    tls.add_argument("--grpc-tls-client-ca", type=Path, help="mutual TLS: CA (PEM) client certificates must chain to")
    _add_limits(serve)
    serve.set_defaults(func=cmd_serve)

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

    demo = verbs.add_parser(
        "demo-ui",
        help="web page over an endpoint: upload images, see mu and sigma ranked, compare two",
        description="A Streamlit page that scores uploaded images (or http(s) URLs, or the built-in examples) "
        "for a prompt on a served endpoint through HPSv3Client: a ranked table of mu and sigma, a bar chart, "
        "and P(A preferred over B) for two of them. Works offline (no usage statistics, nothing fetched from "
        "the internet). Binds to 127.0.0.1 unless --host says otherwise.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--endpoint", default="127.0.0.1:8001", metavar="HOST:PORT[,HOST:PORT...]",
                      help="the gRPC endpoint(s) to score on (hpsv3 serve)")  # fmt: skip
    demo.add_argument("--host", default="127.0.0.1", help="address the page binds (0.0.0.0 exposes it: be sure)")
    demo.add_argument("--port", type=int, default=7860, help="port of the page")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds per request to the endpoint")
    demo.add_argument("--no-urls", action="store_true", help="refuse pasted image URLs (uploads and examples only)")
    demo.add_argument("--examples", type=Path, metavar="DIR",
                      help="images/ and prompts.jsonl to offer; if not given, the repository's examples/")  # fmt: skip
    add_tls_arguments(demo)
    demo.set_defaults(func=cmd_demo_ui)

    verbs.add_parser(
        "bench",
        help="benchmark an endpoint: accuracy, ranking, generators, latency, throughput (hpsv3 bench --help)",
        add_help=False,
    )  # parsed by hpsv3_benchmarks.cli (the parser of benchmarks/run.py): see main()
    verbs.add_parser(
        "train",
        help="train or fine-tune a reward model on HPDv3 pair JSON into a servable checkpoint (hpsv3 train --help)",
        add_help=False,
    )  # parsed by hpsv3_training.cli (the parser of training/train.py): see main()
    verbs.add_parser(
        "cohp",
        help="Chain-of-Human-Preference: pick the generator and refine its image by the endpoint's scores "
        "(hpsv3 cohp --help)",
        add_help=False,
    )  # parsed by hpsv3_cohp.cli (the parser of cohp/run.py): see main()
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmark runner has its own parser (shared with benchmarks/run.py)
        from hpsv3_benchmarks.cli import main as bench

        return bench(argv[1:], prog="hpsv3 bench")
    if argv[:1] == ["train"]:  # the trainer has its own parser (shared with training/train.py)
        try:
            from hpsv3_training.cli import main as train
        except ImportError as exc:
            print(f"hpsv3 train: {exc}; install the training extra: pip install 'hpsv3-serve[train]'", file=sys.stderr)
            return 2
        return train(argv[1:], prog="hpsv3 train")
    if argv[:1] == ["cohp"]:  # so has CoHP (shared with cohp/run.py)
        from hpsv3_cohp.cli import main as cohp

        return cohp(argv[1:], prog="hpsv3 cohp")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
