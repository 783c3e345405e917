"""hpsv3-serve: the HPSv3 human preference score, faithful to the official model, served fast."""

__version__ = "0.1.0"

__all__ = ["ScoreResult", "Scorer", "__version__"]


def __getattr__(name: str):
    if name in ("Scorer", "ScoreResult"):
        from . import scorer

        return getattr(scorer, name)
    raise AttributeError(name)
