"""hpsv3-serve: the HPSv3 human preference score, faithful to the official model, served fast."""

__version__ = "0.1.0"

__all__ = ["DifferentiableScorer", "ScoreResult", "Scorer", "__version__"]


def __getattr__(name: str):
    """Lazy exports: importing the package stays light (no torch) until the scorer is used."""
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    if name == "DifferentiableScorer":
        from .differentiable import DifferentiableScorer

        return DifferentiableScorer
    if name == "ScoreResult":
        from .results import ScoreResult

        return ScoreResult
    raise AttributeError(name)
