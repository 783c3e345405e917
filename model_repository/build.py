"""Render the Triton model repository for a target from `templates/` (one folder per Triton model).

    python model_repository/build.py --target cpu --artifacts build/tiny/onnx --out build/repository
    python model_repository/build.py --target gpu --artifacts ARTIFACTS --out REPO   # on the GPU host
    python model_repository/build.py --target gpu --engine torch --checkpoint C --base B --out REPO

The public interface is the same on every target and engine: the `hpsv3` and `hpsv3_patches` ensembles
(IMAGE or PATCHES + GRID_THW, and PROMPT → MU, SIGMA) behind the same `preprocess`. Each model folder holds a
`config.pbtxt` template (`${name}` fields filled from `RepositorySettings`) and, for Python models,
`1/model.py`; a file named `config.<variant>.pbtxt` or `1/model.<variant>.py` replaces the shared one
for that engine or target (`VARIANTS`: the engine's name first, then the target's). Targets and engines:

- cpu: every step is a Python-backend model; the ONNX graphs run in ONNX Runtime (the tritonserver
  in nvidia-pytriton has only the Python backend).
- gpu, --engine tensorrt-vllm (the default): vision_encoder and reward_head are `tensorrt_plan` models
  (`1/model.plan` links to ARTIFACTS/tensorrt/<model>.plan, built from the same ONNX graphs), the language
  tower runs in vLLM (ARTIFACTS/vllm, written by `hpsv3 export --vllm`) inside a Python model; preprocess stays
  on CPU. Four steps: preprocess → vision_encoder → language_model → reward_head.
- judges (`render(..., judges=[JudgeSource("pickscore"), ...])`, `hpsv3 serve --models`): beside the HPSv3
  ensembles, one Python model per judge named as the judge (`templates/judge`: IMAGE + PROMPT → SCORE, the judge's
  own prepare + score_batch, torch on CPU) and `rewards` (`templates/rewards`: IMAGE + PROMPT → SCORE_<MODEL> for
  HPSv3 and every judge, the image decoded once). On the cpu target a judge with an ONNX export (`onnx`) runs on
  ONNX Runtime, the others on torch, all fp32 on KIND_CPU. On the gpu target (either engine) every judge runs its
  torch model on KIND_GPU in `torch_dtype` (the image has onnxruntime for CPU only):
  the ONNX export is not used; `device="cpu"` serves the same render on KIND_CPU (the export if given, else torch
  fp32), as the tests do.
- gpu, --engine torch: two steps, preprocess → reward_model, a Python model on KIND_GPU running the fast
  engine (`hpsv3_serve.engines.fast_engine`) on the checkpoint itself: no export, no engine build. With
  `device="cpu"` the same model runs on KIND_CPU in fp32 (how the tests serve it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import string
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hpsv3_serve.defaults import DEFAULT_MAX_BATCH_SIZE
from hpsv3_serve.errors import HPSv3Error
from hpsv3_serve.limits import DEFAULT_LIMITS

TEMPLATES = Path(__file__).resolve().parent / "templates"
STAGES = ("preprocess", "preprocess_patches", "vision_encoder", "language_model", "reward_head")
ENSEMBLES = ("hpsv3", "hpsv3_patches")  # encoded image files in; pixels already resized and patched on the client
TARGETS = ("cpu", "gpu")
TARGET_ENGINES = {"cpu": ("onnx",), "gpu": ("tensorrt-vllm", "torch")}  # per target; the first is its default
MODELS = {  # per engine: the Triton models of its repository
    "onnx": (*STAGES, *ENSEMBLES),
    "tensorrt-vllm": (*STAGES, *ENSEMBLES),
    "torch": ("preprocess", "preprocess_patches", "reward_model", *ENSEMBLES),
}
VARIANTS = {"onnx": ("cpu",), "tensorrt-vllm": ("gpu",), "torch": ("torch", "gpu")}  # template variants, in order
ENGINES_DIR = "tensorrt"  # in the artifacts: <model>.plan for each tensorrt_plan model
VLLM_DIR = "vllm"  # in the artifacts: the model folder vLLM serves
JUDGE_TEMPLATE, REWARDS = "judge", "rewards"  # one model per judge, named as it; the multi-reward model
GPU_FILES = (f"{ENGINES_DIR}/vision_encoder.plan", f"{ENGINES_DIR}/reward_head.plan", f"{VLLM_DIR}/tower/config.json")


@dataclass
class RepositorySettings:
    """Every value the templates use."""

    artifacts: str
    base: str
    hidden_size: int
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    preprocess_instances: int = 2
    vision_instances: int = 1
    queue_delay_us: int = 2000
    threads: int = 0  # ONNX Runtime intra-op threads per session (0: all cores; idle threads do not spin)
    vllm_dtype: str = "bfloat16"  # GPU target: the language tower's dtype in vLLM (rm_head stays fp32)
    vllm_quantization: str = "none"  # GPU target: "fp8" quantizes the tower's weights in vLLM (Hopper+)
    max_num_batched_tokens: int = 16384  # GPU target: vLLM's token budget per step (≈ 20 requests)
    gpu_memory_utilization: float = 0.8  # GPU target: vLLM's share; the TensorRT engines use the rest
    max_image_bytes: int = DEFAULT_LIMITS.max_image_bytes  # preprocess: per-request input limits
    max_image_pixels: int = DEFAULT_LIMITS.max_image_pixels
    max_prompt_tokens: int = DEFAULT_LIMITS.max_prompt_tokens  # also the language tower's check of direct calls
    max_prompt_bytes: int = DEFAULT_LIMITS.max_prompt_bytes
    max_queue_size: int = 512  # preprocess, the ensemble's entry: beyond it requests are refused (backpressure)
    checkpoint: str = ""  # --engine torch: the HPSv3 .safetensors the fast engine loads
    device: str = "cuda"  # --engine torch: cuda (KIND_GPU, one instance per card) or cpu (KIND_CPU, tests)
    torch_dtype: str = "bfloat16"  # --engine torch: weights dtype (rm_head stays fp32); float32 on cpu
    torch_compile: bool = False  # --engine torch: torch.compile the layers (minutes of warm-up at load)
    cuda_graphs: bool = True  # --engine torch: replay the language tower from CUDA graphs (ignored on cpu)
    rewards: bool = True  # with judges: the multi-reward model `rewards` (it holds a second copy of their weights)

    @property
    def instance_kind(self) -> str:
        return "KIND_GPU" if self.device.startswith("cuda") else "KIND_CPU"


@dataclass(frozen=True)
class JudgeSource:
    """A judge to serve beside HPSv3 (`hpsv3_serve.judges.JUDGES`) and where its weights and base come from
    (hub id or path; empty: the judge's default hub ids)."""

    name: str
    weights: str = ""
    base: str = ""
    onnx: str = ""  # its towers exported (export/judges_onnx.py): scored on ONNX Runtime; empty: torch on CPU


class RepositoryError(HPSv3Error, ValueError):
    """The artifacts do not hold what the target needs, or the rendered graph does not line up."""


def template(model: str, name: str, variants: tuple[str, ...]) -> Path | None:
    """`name` for the first of `variants` that has one (`config.gpu.pbtxt` over `config.pbtxt`), else the shared
    one, or None when the model has none."""
    for variant in variants:
        specific = TEMPLATES / model / name.replace(".", f".{variant}.", 1)
        if specific.is_file():
            return specific
    shared = TEMPLATES / model / name
    return shared if shared.is_file() else None


def missing_files(engine: str, settings: RepositorySettings) -> list[str]:
    """Files the engine needs that are not there."""
    if engine == "torch":
        return [] if Path(settings.checkpoint).is_file() else [f"the checkpoint {settings.checkpoint or '(none)'}"]
    needed = GPU_FILES if engine == "tensorrt-vllm" else ()
    return [name for name in needed if not (Path(settings.artifacts) / name).is_file()]


def render(
    target: str,
    settings: RepositorySettings,
    out: Path,
    engine: str | None = None,
    judges: Sequence[JudgeSource] = (),
) -> Path:
    """Write the repository for `target` (on `engine`, default the target's first) into `out` (replaced as a
    whole), with a model per judge and (unless `settings.rewards` is off) `rewards` when `judges` are given; check
    its graph; returns `out`."""
    from hpsv3_serve.judges import JUDGES

    if unknown := [judge.name for judge in judges if judge.name not in JUDGES or judge.name == "hpsv3"]:
        raise RepositoryError(
            f"no judge {unknown[0]!r} to serve beside hpsv3; choose from {sorted(set(JUDGES) - {'hpsv3'})}"
        )
    if len({judge.name for judge in judges}) != len(judges):
        raise RepositoryError(f"a judge is named twice in {[judge.name for judge in judges]}")
    if target not in TARGETS:
        raise RepositoryError(f"target {target!r} is unknown; choose from {TARGETS}")
    engine = engine or TARGET_ENGINES[target][0]
    if engine not in TARGET_ENGINES[target]:
        raise RepositoryError(f"the {target} target runs {' or '.join(TARGET_ENGINES[target])}, not {engine!r}")
    artifacts = Path(settings.artifacts)
    if missing := missing_files(engine, settings):
        if engine == "torch":
            raise RepositoryError(f"--engine torch needs {missing[0]}: pass the HPSv3 .safetensors (--checkpoint)")
        raise RepositoryError(
            f"the {target} target needs {', '.join(missing)} in {artifacts}: build the TensorRT engines with "
            f"`python export/tensorrt.py --onnx {artifacts}` and the vLLM folder with "
            f"`hpsv3 export --vllm {artifacts / VLLM_DIR}` on the GPU host (docs/ARCHITECTURE.md), or serve "
            "the fast torch engine instead: --engine torch"
        )
    values = {key: str(value) for key, value in asdict(settings).items()} | {"instance_kind": settings.instance_kind}
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for model in MODELS[engine]:
        dest = staging / model
        (dest / "1").mkdir(parents=True)
        config = string.Template(template(model, "config.pbtxt", VARIANTS[engine]).read_text(encoding="utf-8"))
        text = config.substitute(values)
        (dest / "config.pbtxt").write_text(text, encoding="utf-8")
        if 'platform: "tensorrt_plan"' in text:
            (dest / "1" / "model.plan").symlink_to((artifacts / ENGINES_DIR / f"{model}.plan").resolve())
        elif code := template(model, "1/model.py", VARIANTS[engine]):
            shutil.copy(code, dest / "1" / "model.py")
    if judges:
        _render_judges(staging, judges, values | judge_placement(target, settings))
    check_ensemble(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def judge_placement(target: str, settings: RepositorySettings) -> dict[str, str]:
    """Where the judges of a `target` render run: `judge_device`, `judge_dtype` and `judge_kind`."""
    if target == "gpu" and settings.device.startswith("cuda"):
        return {"judge_device": settings.device, "judge_dtype": settings.torch_dtype, "judge_kind": "KIND_GPU"}
    return {"judge_device": "cpu", "judge_dtype": "float32", "judge_kind": "KIND_CPU"}


def parse_judges(models: str, weights: Sequence[str] = (), bases: Sequence[str] = ()) -> tuple[JudgeSource, ...]:
    """The judges of a `--models` list (hpsv3 always served; not a judge) with `--judge-weights` / `--judge-base`
    NAME=PATH-OR-HUB-ID pairs (`hpsv3 serve` and the container entrypoint)."""
    from hpsv3_serve.judges import JUDGES

    names = list(dict.fromkeys(name.strip() for name in models.split(",") if name.strip()))
    if unknown := [name for name in names if name not in JUDGES]:
        raise RepositoryError(f"--models: unknown reward model {unknown[0]!r}; choose from {', '.join(JUDGES)}")
    sources: dict[str, dict[str, str]] = {"weights": {}, "base": {}}
    for kind, pairs in (("weights", weights), ("base", bases)):
        for pair in pairs:
            name, sep, source = pair.partition("=")
            if not sep or name not in names or name == "hpsv3":
                raise RepositoryError(f"--judge-{kind} {pair!r}: expected NAME=PATH-OR-HUB-ID for a judge of --models "
                                      "(hpsv3 takes --checkpoint / --base)")  # fmt: skip
            sources[kind][name] = source
    judges = [name for name in names if name != "hpsv3"]
    return tuple(JudgeSource(name, sources["weights"].get(name, ""), sources["base"].get(name, "")) for name in judges)


def _render_judges(staging: Path, judges: Sequence[JudgeSource], values: dict[str, str]) -> None:
    """A `templates/judge` model per judge, and `rewards` over HPSv3 and all of them (unless turned off)."""
    from hpsv3_serve.judges.served import score_output

    def write(model: str, folder: str, fields: dict[str, str]) -> None:
        (staging / folder / "1").mkdir(parents=True)
        text = string.Template((TEMPLATES / model / "config.pbtxt").read_text(encoding="utf-8")).substitute(fields)
        (staging / folder / "config.pbtxt").write_text(text, encoding="utf-8")
        shutil.copy(TEMPLATES / model / "1" / "model.py", staging / folder / "1" / "model.py")

    def quoted(text: str) -> str:  # inside a pbtxt string_value
        return json.dumps(text)[1:-1]

    if values["judge_device"] != "cpu":  # on the GPU: the torch judge (see the module doc)
        judges = [JudgeSource(judge.name, judge.weights, judge.base) for judge in judges]
    for judge in judges:
        fields = {"judge": judge.name, "judge_weights": quoted(judge.weights), "judge_base": quoted(judge.base),
                  "judge_onnx": quoted(judge.onnx)}  # fmt: skip
        write(JUDGE_TEMPLATE, judge.name, values | fields)
    names = ["hpsv3", *(judge.name for judge in judges)]
    outputs = ",\n".join(f'  {{ name: "{score_output(name)}", data_type: TYPE_FP32, dims: [ 1 ] }}' for name in names)
    sources = json.dumps([asdict(judge) for judge in judges])
    if values["rewards"] == "True":
        write(REWARDS, REWARDS, values | {"outputs": outputs, "judges": quoted(sources)})


def check_ensemble(repository: Path) -> None:
    """Parse every config with Triton's own schema; each step of each ensemble must map onto its model's
    inputs and outputs with matching data types (catches a broken target before a server loads it)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    configs = {
        folder.name: text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        for folder in sorted(repository.iterdir())
        if (folder / "config.pbtxt").is_file()
    }
    for name in ENSEMBLES:
        _check_steps(name, configs)
    if REWARDS in configs:
        _check_rewards(configs)


def _check_rewards(configs: dict) -> None:
    """`rewards` (a Python model, no ensemble): a SCORE_<MODEL> output for hpsv3 and for each judge it runs and
    ERRORS, each judge also served as its own IMAGE + PROMPT → SCORE model on the same device, and `hpsv3_patches`
    for HPSv3."""
    from tritonclient.grpc import model_config_pb2

    from hpsv3_serve.judges.served import score_output

    rewards = configs[REWARDS]
    parameters = {key: value.string_value for key, value in rewards.parameters.items()}
    names = [source["name"] for source in json.loads(parameters.get("judges", "[]"))]
    outputs = {tensor.name: tensor.data_type for tensor in rewards.output}
    wanted = {score_output(name): model_config_pb2.TYPE_FP32 for name in ("hpsv3", *names)}
    wanted["ERRORS"] = model_config_pb2.TYPE_STRING
    if outputs != wanted:
        raise RepositoryError(
            f"{REWARDS}: outputs {sorted(outputs)} are not one FP32 score per model and ERRORS {sorted(wanted)}"
        )
    if "hpsv3_patches" not in configs:
        raise RepositoryError(f"{REWARDS}: HPSv3's ensemble hpsv3_patches is not in this repository")
    kinds = {group.kind for group in rewards.instance_group}
    for name in names:
        judge = configs.get(name)
        if judge is None:
            raise RepositoryError(f"{REWARDS}: judge {name} is not a model of this repository")
        inputs = {tensor.name: tensor.data_type for tensor in judge.input}
        if inputs != {key: model_config_pb2.TYPE_STRING for key in ("IMAGE", "PROMPT")} or [
            (tensor.name, tensor.data_type) for tensor in judge.output
        ] != [("SCORE", model_config_pb2.TYPE_FP32)]:
            raise RepositoryError(f"{name}: not IMAGE + PROMPT (BYTES) → SCORE (FP32) as every judge")
        device = judge.parameters["device"].string_value
        if {group.kind for group in judge.instance_group} != kinds or device != parameters.get("device"):
            raise RepositoryError(f"{name} runs on {device}, {REWARDS} on {parameters.get('device')}: not the same")


def _check_steps(name: str, configs: dict) -> None:
    ensemble = configs[name]
    types = {tensor.name: tensor.data_type for tensor in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        if step.model_name not in configs:
            raise RepositoryError(f"{name}: step {step.model_name} is not a model of this repository")
        model = configs[step.model_name]
        inputs = {tensor.name: tensor.data_type for tensor in model.input}
        for key, tensor in step.input_map.items():
            if key not in inputs or types.get(tensor) != inputs[key]:
                raise RepositoryError(f"{step.model_name}: ensemble tensor {tensor} does not feed its input {key}")
        outputs = {tensor.name: tensor.data_type for tensor in model.output}
        for key, tensor in step.output_map.items():
            if key not in outputs:
                raise RepositoryError(f"{step.model_name} has no output {key} for ensemble tensor {tensor}")
            types[tensor] = outputs[key]
        if unfed := set(inputs) - set(step.input_map):
            raise RepositoryError(f"{step.model_name}: inputs {sorted(unfed)} get nothing from the ensemble")
    for tensor in ensemble.output:
        if types.get(tensor.name) != tensor.data_type:
            raise RepositoryError(f"{name}: output {tensor.name} is not produced by any step with its type")


def settings_for(artifacts: Path, **overrides: int | float | str) -> RepositorySettings:
    """Settings for an export folder: paths and hidden size come from its manifest."""
    from hpsv3_serve.engines.onnx_engine import BASE_DIR, read_manifest

    artifacts = artifacts.resolve()
    manifest = read_manifest(artifacts)
    return RepositorySettings(
        artifacts=str(artifacts), base=str(artifacts / BASE_DIR), hidden_size=manifest["hidden_size"], **overrides
    )


def settings_for_checkpoint(checkpoint: Path, base: Path, **overrides: int | float | str | bool) -> RepositorySettings:
    """Settings for --engine torch: the checkpoint itself and its base folder (no export)."""
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    hidden_size = config.get("text_config", {}).get("hidden_size", config.get("hidden_size"))
    return RepositorySettings(
        artifacts="", base=str(base.resolve()), hidden_size=hidden_size, checkpoint=str(checkpoint.resolve()),
        **overrides,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="deployment target")
    parser.add_argument("--engine", choices=TARGET_ENGINES["gpu"],
                        help="gpu: tensorrt-vllm (default: TensorRT plans + vLLM, from --artifacts) or torch (the "
                        "fast torch engine on --checkpoint, no export)")  # fmt: skip
    parser.add_argument("--artifacts", type=Path, help="folder written by `hpsv3 export` (cpu; gpu tensorrt-vllm)")
    parser.add_argument("--checkpoint", type=Path, help="torch engine: the HPSv3 .safetensors")
    parser.add_argument("--base", type=Path, help="torch engine: the Qwen2-VL base folder (config + tokenizer)")
    parser.add_argument("--out", type=Path, required=True, help="repository folder to (re)write")
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="dynamic batching limit of the models"
    )
    parser.add_argument("--preprocess-instances", type=int, default=2, help="CPU instances decoding images")
    parser.add_argument("--threads", type=int, default=0, help="cpu: ONNX Runtime threads per session (0: all)")
    parser.add_argument("--vllm-dtype", default="bfloat16", help="gpu: dtype of the language tower in vLLM")
    parser.add_argument("--vllm-quantization", choices=["none", "fp8"], default="none",
                        help="gpu: fp8 = vLLM's dynamic FP8 weights for the tower (Hopper+)")  # fmt: skip
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384, help="gpu: vLLM tokens per step")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="gpu: vLLM's share of memory")
    parser.add_argument("--torch-dtype", default="bfloat16", help="torch engine: weights dtype (rm_head stays fp32)")
    parser.add_argument("--compile", action="store_true", help="torch engine: torch.compile the layers")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="torch engine: no CUDA graphs")  # fmt: skip
    args = parser.parse_args(argv)
    engine = args.engine if args.target == "gpu" else None
    try:
        if engine == "torch":
            if not (args.checkpoint and args.base):
                raise RepositoryError("--engine torch needs --checkpoint and --base")
            torch_options = {"torch_dtype": args.torch_dtype, "torch_compile": args.compile}
            settings = settings_for_checkpoint(
                args.checkpoint, args.base, max_batch_size=args.max_batch_size,
                preprocess_instances=args.preprocess_instances, cuda_graphs=args.cuda_graphs, **torch_options,
            )  # fmt: skip
        else:
            if not args.artifacts:
                raise RepositoryError(f"the {args.target} target needs --artifacts (the folder of `hpsv3 export`)")
            settings = settings_for(
                args.artifacts,
                max_batch_size=args.max_batch_size,
                preprocess_instances=args.preprocess_instances,
                threads=args.threads,
                vllm_dtype=args.vllm_dtype,
                vllm_quantization=args.vllm_quantization,
                max_num_batched_tokens=args.max_num_batched_tokens,
                gpu_memory_utilization=args.gpu_memory_utilization,
            )
        out = render(args.target, settings, args.out, engine)
    except (HPSv3Error, RepositoryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {args.target} repository ({engine or TARGET_ENGINES[args.target][0]} engine) in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
