"""The result of scoring one (image, prompt) pair: shared by the in-process scorer and the client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .errors import InputError


def printable(prompt: object) -> str:
    """A prompt as text any output can carry: lone surrogates (which UTF-8 cannot encode) become escapes."""
    return str(prompt).encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class ScoreResult:
    """The score of one (image, prompt) pair, or why it could not be scored."""

    image: str
    prompt: str
    mu: float | None = None
    sigma: float | None = None
    log_sigma: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def score(self) -> float | None:
        """mu, under the name every reward model's results share (`hpsv3_serve.judges`)."""
        return self.mu

    def to_dict(self) -> dict:
        """JSON form: scores for a success, `error` instead of scores for a failure."""
        data = asdict(self)
        drop = ("mu", "sigma", "log_sigma") if self.error else ("error",)
        return {key: value for key, value in data.items() if key not in drop}


def scores_or_raise(results: Sequence) -> list[float]:
    """`.score` of every result (HPSv3: mu); raises `InputError` naming the first failures if any item failed."""
    failed = [result.error for result in results if not result.ok]
    if failed:
        raise InputError(f"{len(failed)} of {len(results)} items", "; ".join(failed[:3]))
    return [result.score for result in results]


def format_table(rows: list[dict]) -> str:
    """A plain aligned table of `ScoreResult.to_dict()` rows: #, mu, sigma, image, prompt (or error); rows of another
    reward model (`JudgeResult.to_dict()`) show its score instead of mu and no sigma."""

    def clip(text: str, width: int, keep_end: bool = False) -> str:
        text = text.replace("\n", "⏎").replace("\t", " ")
        if len(text) <= width:
            return text
        return "…" + text[1 - width :] if keep_end else text[: width - 1] + "…"

    label = "score" if any("score" in row for row in rows) else "mu"
    lines = [f"{'#':>3}  {label:>9}  {'sigma':>8}  {'image':<34}  prompt"]
    for number, row in enumerate(rows, 1):
        if "mu" in row:
            scores = f"{row['mu']:>9.4f}  {row['sigma']:>8.4f}"
        else:
            scores = f"{row['score']:>9.4f}  {'':>8}" if "score" in row else f"{'error':>9}  {'':>8}"
        tail = clip(row["error"], 70) if "error" in row else clip(row["prompt"], 40)
        lines.append(f"{number:>3}  {scores}  {clip(row['image'], 34, keep_end=True):<34}  {tail}")
    return "\n".join(lines)
