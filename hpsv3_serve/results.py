"""The result of scoring one (image, prompt) pair: shared by the in-process scorer and the client."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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

    def to_dict(self) -> dict:
        """JSON form: scores for a success, `error` instead of scores for a failure."""
        data = asdict(self)
        drop = ("mu", "sigma", "log_sigma") if self.error else ("error",)
        return {key: value for key, value in data.items() if key not in drop}
