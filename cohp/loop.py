"""The CoHP loop for one prompt: model preference (each generator samples, best mean wins), then sample
preference (img2img rounds from the best image so far, keeping the best image seen).

Generation runs here, scoring on the BackgroundScorer's thread: each image is sent as soon as it exists,
so the endpoint scores it while the next one is generated (and while the next model loads).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from . import generators as gens
from .report import contact_sheet, write_json_atomic
from .scoring import BackgroundScorer

log = logging.getLogger("hpsv3_cohp")


class NoGeneratorError(RuntimeError):
    """None of the requested generators could be loaded."""


@dataclass(frozen=True)
class Settings:
    """How much to sample; the defaults are the official recipe."""

    rounds: int = 4
    strengths: tuple[float, ...] = (0.8, 0.8, 0.5, 0.5)
    images_per_model: int = 2
    images_per_round: int = 4
    seed: int = 0
    device: str = "cpu"


def derive_seed(seed: int, *parts: object) -> int:
    """A reproducible per-image seed from the run seed and where the image is (model, round, index)."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class Sample:
    """A generated image: file (relative to the prompt's folder), seed, and its score once known."""

    path: str
    seed: int
    future: Future[float]
    score: float | None = None

    def resolve(self) -> dict:
        self.score = self.future.result()
        return {"path": self.path, "seed": self.seed, "score": self.score}


def _generate(
    pipeline: object, generator: gens.Generator, prompt: str, seeds: list[int], folder: Path, out: Path,
    scorer: BackgroundScorer, bar: tqdm, image: Image.Image | None = None, strength: float | None = None,
) -> list[Sample]:  # fmt: skip
    """Sample one image per seed into `folder`, submitting each for scoring as soon as it is saved."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for index, seed in enumerate(seeds):
        picture = gens.sample(pipeline, generator, prompt, seed, image=image, strength=strength)
        path = folder / f"{index}.png"
        picture.save(path)
        name = str(path.relative_to(out))
        samples.append(Sample(name, seed, scorer.submit(picture, prompt, name)))
        bar.update(1)
    return samples


def run_prompt(
    prompt: str, generators: list[gens.Generator], settings: Settings, scorer: BackgroundScorer, out: Path
) -> dict:
    """Run CoHP for `prompt` into `out` and return the report (also written to out/report.json, last)."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    total = len(generators) * settings.images_per_model + settings.rounds * settings.images_per_round
    bar = tqdm(total=total, unit="img", desc=prompt[:40], leave=False, disable=None)
    models: dict[str, dict] = {}
    pending: dict[str, list[Sample]] = {}
    for generator in generators:  # model preference: one generator in memory at a time
        seeds = [derive_seed(settings.seed, generator.name, 0, i) for i in range(settings.images_per_model)]
        tick = time.perf_counter()
        try:
            pipeline = gens.load(generator, "text2image", settings.device)
        except Exception as exc:  # any load failure: skip this generator, keep the others
            log.warning("skipping generator %r: it did not load from %s (%s)", generator.name, generator.source, exc)
            models[generator.name] = {"source": generator.source, "error": f"{type(exc).__name__}: {exc}"}
            bar.total -= settings.images_per_model
            continue
        loaded = time.perf_counter()
        pending[generator.name] = _generate(
            pipeline, generator, prompt, seeds, out / "models" / generator.name, out, scorer, bar
        )
        del pipeline
        gens.release_memory()
        models[generator.name] = {
            "source": generator.source,
            "load_s": round(loaded - tick, 3),
            "generate_s": round(time.perf_counter() - loaded, 3),
        }
    if not pending:
        bar.close()
        raise NoGeneratorError(
            "no generator could be loaded (" + "; ".join(f"{n}: {m['error']}" for n, m in models.items()) + ")"
        )
    for name, samples in pending.items():
        images = [sample.resolve() for sample in samples]
        scores = [image["score"] for image in images]
        models[name].update(mean=sum(scores) / len(scores), max=max(scores), images=images)
    best_model = max(pending, key=lambda name: models[name]["mean"])
    kept = max(models[best_model]["images"], key=lambda image: image["score"])
    chosen_path = [{"stage": "model", "model": best_model, **kept}]

    generator = next(g for g in generators if g.name == best_model)
    rounds = []
    if settings.rounds:  # sample preference: img2img from the best image so far
        pipeline = gens.load(generator, "image2image", settings.device)
        for number, strength in enumerate(settings.strengths[: settings.rounds], 1):
            tick = time.perf_counter()
            seeds = [derive_seed(settings.seed, best_model, number, i) for i in range(settings.images_per_round)]
            start = kept["path"]
            source = Image.open(out / start).convert("RGB")
            samples = _generate(
                pipeline, generator, prompt, seeds, out / "rounds" / str(number), out, scorer, bar, source, strength
            )
            images = [sample.resolve() for sample in samples]
            best = max(images, key=lambda image: image["score"])
            if best["score"] > kept["score"]:
                kept = best
                chosen_path.append({"stage": "round", "round": number, **best})
            rounds.append(
                {
                    "round": number,
                    "strength": strength,
                    "input": start,
                    "images": images,
                    "best_score": best["score"],
                    "kept_score": kept["score"],
                    "seconds": round(time.perf_counter() - tick, 3),
                }
            )
        del pipeline
        gens.release_memory()
    bar.close()

    shutil.copyfile(out / kept["path"], out / "final.png")
    report = {
        "prompt": prompt,
        "reward_model": scorer.model,
        "settings": {**settings.__dict__, "strengths": list(settings.strengths[: settings.rounds])},
        "generators": {g.name: {"source": g.source, "steps": g.steps, "guidance": g.guidance} for g in generators},
        "models": models,
        "best_model": best_model,
        "rounds": rounds,
        "chosen_path": chosen_path,
        "final": {"path": "final.png", "source": kept["path"], "score": kept["score"]},
        "seconds": round(time.perf_counter() - started, 3),
    }
    contact_sheet(report, out, out / "contact_sheet.png")
    write_json_atomic(out / "report.json", report)
    return report
