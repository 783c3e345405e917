"""Checkpoint I/O: the official `HPSv3.safetensors` layout ⇄ this package's model; hub ids and paths.

The official file is `model.state_dict()` under transformers 4.45 (flat keys: `visual.*`, `model.*`,
`lm_head.weight`, `rm_head.{0,3,5}.*`); transformers 5 checkpoints use `model.visual.*` and
`model.language_model.*`. Both load by key mapping. Only config.json and tokenizer files are read
from the base model: never its 16 GB of weights, which the checkpoint replaces anyway. Pickle files
(.pt/.pth/.bin) are refused: unpickling can run code, so they are converted to safetensors once.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Qwen2VLConfig

from .defaults import DEFAULT_BASE, DEFAULT_CHECKPOINT, DTYPE_NAMES
from .errors import ModelLoadError
from .model import HPSv3RewardModel
from .prompt import VOCAB_ROWS

CHECKPOINT_FILE = "HPSv3.safetensors"
BASE_FILES = [
    "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
    "preprocessor_config.json", "chat_template.json", "generation_config.json",
]  # fmt: skip
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
EMBED_KEY = "model.embed_tokens.weight"
DIGEST_CACHE = "source_digests.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
TO_SAFETENSORS = (  # python -c "TO_SAFETENSORS" IN.pth OUT.safetensors (the recipe in docs/RELIABILITY.md)
    "import sys, torch; from safetensors.torch import save_file; "
    "s = torch.load(sys.argv[1], map_location='cpu', weights_only=True); "
    "save_file({k: v.contiguous() for k, v in s.get('model', s).items()}, sys.argv[2])"
)
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")  # huggingface_hub's cache: models--org--name/snapshots/<commit>/
_TO_OURS = [  # (checkpoint prefix, our prefix); first match wins, None drops the tensor
    ("model.language_model.", "language_model."),
    ("model.visual.", "visual."),
    ("model.", "language_model."),
    ("visual.", "visual."),
    ("rm_head.", "rm_head."),
    ("lm_head.", None),  # never used for scoring
]


@dataclass(frozen=True)
class Source:
    """Where a checkpoint or base came from: the spec as given, the revision asked for, the hub commit."""

    spec: str
    revision: str | None = None
    commit: str | None = None


_HUB_SOURCES: dict[Path, Source] = {}  # this process's hub downloads, for manifests (exports receive paths)


def hub_commit(path: Path) -> str | None:
    """The commit of a path inside the hub cache (…/models--org--name/snapshots/<commit>/…), else None."""
    parts = path.parts
    for index in range(1, len(parts) - 1):
        if parts[index] == "snapshots" and parts[index - 1].startswith("models--"):
            return parts[index + 1] if COMMIT_HASH.fullmatch(parts[index + 1]) else None
    return None


def source_record(path: Path) -> dict:
    """Manifest entry for a resolved checkpoint or base: spec, revision asked for, hub commit, local path."""
    source = _HUB_SOURCES.get(path) or Source(str(path), commit=hub_commit(path))
    return {**asdict(source), "path": str(path)}


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def _hub_error(spec: str, revision: str | None, what: str, exc: Exception) -> ModelLoadError:
    at = f" at revision {revision!r}" if revision else ""
    pinned = f" --revision {revision}" if revision else ""
    return ModelLoadError(
        f"could not get {what} from the Hugging Face hub repo {spec!r}{at} ({type(exc).__name__}: {exc}). "
        f"If this machine is offline, download it where the hub is reachable "
        f"(`hf download {spec}{pinned}`) and pass the local path instead."
    )


def _local_only(spec: str, revision: str | None) -> None:
    """A revision pins a hub repo; with a local path it would pin nothing, so it is refused."""
    if revision:
        raise ModelLoadError(f"revision {revision!r} is for hub ids, but {spec!r} is a local path: drop the revision")


def _from_hub(spec: str, revision: str | None, path: str) -> Path:
    """Remember where a hub download came from (`source_record`) and return its path."""
    _HUB_SOURCES[Path(path)] = Source(spec, revision, hub_commit(Path(path)))
    return Path(path)


def resolve_checkpoint(
    spec: str = DEFAULT_CHECKPOINT, filename: str = CHECKPOINT_FILE, revision: str | None = None
) -> Path:
    """A local checkpoint file for a path, a folder holding `filename`, or a hub repo id (at `revision`:
    commit hash, branch or tag; default the repo's main branch)."""
    path = Path(spec).expanduser()
    if path.exists():
        _local_only(spec, revision)
    if path.is_file():
        require_safetensors(path)
        return path
    if path.is_dir():
        if (path / filename).is_file():
            return path / filename
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise ModelLoadError(f"{path}: no {filename} (or single *.safetensors) in this folder")
    if _looks_like_hub_id(spec):
        from huggingface_hub import hf_hub_download

        try:
            return _from_hub(spec, revision, hf_hub_download(spec, filename, revision=revision))
        except Exception as exc:  # offline, missing repo or revision, auth: all end the same way for the user
            raise _hub_error(spec, revision, filename, exc) from exc
    raise ModelLoadError(f"checkpoint {spec!r} not found: pass a .safetensors file, a folder, or a hub id")


def resolve_base(spec: str = DEFAULT_BASE, revision: str | None = None) -> Path:
    """A local folder with the base config.json and tokenizer files (weights are never fetched); a hub id is
    downloaded at `revision` (commit hash, branch or tag; default the repo's main branch)."""
    path = Path(spec).expanduser()
    if path.exists():
        _local_only(spec, revision)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: no config.json; --base needs a Qwen2-VL-7B-Instruct folder")
        return path
    if _looks_like_hub_id(spec):
        from huggingface_hub import snapshot_download

        try:
            return _from_hub(spec, revision, snapshot_download(spec, revision=revision, allow_patterns=BASE_FILES))
        except Exception as exc:
            raise _hub_error(spec, revision, "config.json and tokenizer files", exc) from exc
    raise ModelLoadError(f"base {spec!r} not found: pass a folder with config.json + tokenizer.json, or a hub id")


def load_config(base: Path) -> Qwen2VLConfig:
    """The Qwen2-VL config of a base folder (legacy flat or transformers-5 layout)."""
    config = Qwen2VLConfig.from_pretrained(base)
    if config.model_type != "qwen2_vl":
        raise ModelLoadError(f"{base}: model_type {config.model_type!r}; HPSv3 is built on qwen2_vl")
    return config


def to_our_key(key: str) -> str | None:
    """Map an official (or transformers-5) checkpoint key to this package's module names."""
    for prefix, ours in _TO_OURS:
        if key.startswith(prefix):
            return None if ours is None else ours + key[len(prefix) :]
    raise ModelLoadError(f"unexpected checkpoint key {key!r}: not an HPSv3 / Qwen2-VL reward model")


def to_official_key(key: str) -> str:
    """Inverse of `to_our_key` for the official flat layout."""
    if key.startswith("language_model."):
        return "model." + key[len("language_model.") :]
    return key


def require_safetensors(path: Path) -> None:
    """Refuse any checkpoint but .safetensors; a pickle file gets the one command that converts it."""
    if path.suffix in PICKLE_SUFFIXES:
        out = shlex.quote(str(path.with_suffix(".safetensors")))
        raise ModelLoadError(
            f"{path}: pickle checkpoints ({', '.join(PICKLE_SUFFIXES)}) are not loaded, since unpickling can run "
            f'code. If you trust the file, convert it once (torch>=2.6): python -c "{TO_SAFETENSORS}" '
            f"{shlex.quote(str(path))} {out}"
        )
    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path}: unsupported checkpoint format (use .safetensors)")


def read_state_dict(path: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Read a .safetensors checkpoint in our key names (rm_head kept float32)."""
    require_safetensors(path)
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        raw = {key: handle.get_tensor(key) for key in handle.keys() if to_our_key(key) is not None}  # noqa: SIM118
    state = {}
    for key, tensor in raw.items():
        ours = to_our_key(key)
        if ours is not None:
            state[ours] = tensor.float() if ours.startswith("rm_head.") else tensor.to(dtype)
    return state


def load_model(
    checkpoint: Path, base: Path, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> HPSv3RewardModel:
    """Build the reward model on the meta device and fill it from the checkpoint (no random init)."""
    config = load_config(base)
    state = read_state_dict(checkpoint, dtype)
    embed = state.get("language_model.embed_tokens.weight")
    if embed is None:
        raise ModelLoadError(f"{checkpoint}: no {EMBED_KEY}; is this an HPSv3 checkpoint?")
    if embed.shape[0] < VOCAB_ROWS:
        raise ModelLoadError(f"{checkpoint}: {embed.shape[0]} embedding rows, the <|Reward|> token needs {VOCAB_ROWS}")
    with torch.device("meta"):
        model = HPSv3RewardModel(config, vocab_rows=embed.shape[0])
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{checkpoint} does not fit the base config {base}/config.json: {exc}") from exc
    model.rebuild_rotary_buffers()
    model.to(device)
    model.rm_head.float()
    return model.eval()


def save_official(state: dict[str, torch.Tensor], path: Path, lm_head: torch.Tensor | None = None) -> None:
    """Write our state dict in the official flat layout (the format `hpsv3` and this stack load)."""
    tensors = {to_official_key(k): v.contiguous() for k, v in state.items()}
    if lm_head is not None:
        tensors["lm_head.weight"] = lm_head.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    partial.replace(path)


def source_files(checkpoint: Path, base: Path) -> dict[str, Path]:
    """Every file an export is made from, by role: the checkpoint and each of BASE_FILES the base has (the
    ONNX export copies them all; the served tokenizer is built from tokenizer.json alone)."""
    return {"checkpoint": checkpoint} | {name: base / name for name in BASE_FILES if (base / name).is_file()}


def source_digest(checkpoint: Path, base: Path) -> str:
    """Content hash of what an export is made from (`source_files`: names and bytes)."""
    digest = hashlib.sha256()
    for role, path in source_files(checkpoint, base).items():
        digest.update(f"{role}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def cached_digest(checkpoint: Path, base: Path, workdir: Path) -> str:
    """`source_digest`, remembered in the workdir per identity (path, size, mtime) of each of `source_files`."""
    identity = json.dumps(
        [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in source_files(checkpoint, base).values()]
    )
    cache_path = workdir / DIGEST_CACHE
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if identity not in cache:
        cache[identity] = source_digest(checkpoint, base)
        cache_path.write_text(json.dumps(cache, indent=1))
    return cache[identity]
