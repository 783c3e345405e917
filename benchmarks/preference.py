"""`pairs` and `ranking`: how often each served model prefers the image people preferred.

Both reduce to pairs (a ranked list gives all its pairs) and count them the same way; see TIE_RULES. With several
models (`--model hpsv3,pickscore`) the report leads with the paper's table shape: models as rows, the data file as
the column, model ties apart.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from .cache import ScoreCache
from .formats import Pair, load_lists, load_pairs
from .metrics import CI_METHOD, PairCounts
from .report import Report, exclusions, interval, model_blocks, percent, table
from .scoring import Endpoint, Scores, score_items

HUMAN_TIE_RULE = (
    "a pair people did not decide is a human tie (hpdv3: the two largest choice_dist counts are equal; hpdv2-pairs: "
    "equal human_preference; pickapic: label_0 = label_1; ranked lists: equal ranks): counted, not scored, left "
    "out of every accuracy"
)
MODEL_TIE_RULE = (
    "a pair whose two scores (HPSv3: mu) differ by at most the tie tolerance is a model tie: not correct in "
    "`accuracy` (as the official evaluation, which counts mu(preferred) > mu(other)), left out of "
    "`accuracy_without_model_ties`"
)
COUNT_HEADER = ["pairs", "correct", "wrong", "model ties", "accuracy", "95 % CI", "accuracy without model ties"]


def evaluate(pairs: list[Pair], scores: Scores, tolerance: float) -> dict:
    """Overall and per-model-pair counts of the pairs people decided and whose two images were scored."""
    overall, by_models, excluded = PairCounts(), defaultdict(PairCounts), Counter()
    for pair in pairs:
        if pair.human_tie:
            excluded["human_ties"] += 1
            continue
        problem = scores.problem(pair.chosen, pair.prompt) or scores.problem(pair.rejected, pair.prompt)
        if problem:
            excluded[f"{problem}_image"] += 1
            continue
        mu_chosen, mu_rejected = scores.score[(pair.chosen, pair.prompt)], scores.score[(pair.rejected, pair.prompt)]
        overall.add(mu_chosen, mu_rejected, tolerance)
        if pair.models:
            by_models[" vs ".join(sorted(pair.models))].add(mu_chosen, mu_rejected, tolerance)
    return {
        "pairs_in_data": len(pairs),
        "excluded": {key: excluded[key] for key in ("human_ties", "missing_image", "failed_image")},
        "overall": overall.summary(),
        "by_model_pair": {name: by_models[name].summary() for name in sorted(by_models)},
    }


def _row(label: str, counts: dict) -> list[object]:
    values = [counts["pairs"], counts["correct"], counts["wrong"], counts["model_ties"], percent(counts["accuracy"])]
    return [label, *values, interval(counts["ci95"]), percent(counts["accuracy_without_model_ties"])]


def _counts(result: dict) -> list[str]:
    """One model's count table, what was left out, and the missing or failed items."""
    excluded = result["excluded"]
    lines = table(["", *COUNT_HEADER], [_row("all", result["overall"])])
    return [
        *lines,
        "",
        f"{result['pairs_in_data']} pairs in the data; left out: {excluded['human_ties']} human ties, "
        f"{excluded['missing_image']} with a missing image file, {excluded['failed_image']} with an image the "
        "endpoint could not score.",
    ]


def _rules(result: dict) -> list[str]:
    return [
        f"- Human ties: {HUMAN_TIE_RULE}.",
        f"- Model ties: {MODEL_TIE_RULE}; tolerance {result['rules']['tie_tolerance']:g}.",
        f"- Interval: {CI_METHOD}.",
    ]


def _by_model_pair(result: dict, heading: str) -> list[str]:
    if not result["by_model_pair"]:
        return []
    rows = [_row(name, counts) for name, counts in result["by_model_pair"].items()]
    return ["", f"{heading} By model pair", "", *table(["models", *COUNT_HEADER], rows)]


def markdown(title: str, result: dict) -> str:
    """One model: its counts. Several: the table of accuracies (models as rows), then each model's counts."""
    if "models" not in result:
        lines = [f"# {title}", "", *_counts(result), "", *_rules(result), *exclusions(result)]
        return "\n".join(lines + _by_model_pair(result, "##")) + "\n"
    column = Path(result["data"]).name
    rows = [
        [model, percent(r["overall"]["accuracy"]), r["overall"]["model_ties"], interval(r["overall"]["ci95"]),
         percent(r["overall"]["accuracy_without_model_ties"]), r["overall"]["pairs"]]
        for model, r in result["models"].items()
    ]  # fmt: skip
    header = ["model", column, "model ties", "95 % CI", "without model ties", "pairs"]
    lines = [f"# {title}", "", *table(header, rows), "", *_rules(result)]
    for model, block in result["models"].items():
        lines += ["", f"## {model}", "", *_counts(block), *exclusions(block), *_by_model_pair(block, "###")]
    return "\n".join(lines) + "\n"


def _report(task: str, title: str, pairs: list[Pair], args: argparse.Namespace, extra: dict) -> Report:
    decided = [pair for pair in pairs if not pair.human_tie]
    items = [(image, pair.prompt) for pair in decided for image in (pair.chosen, pair.rejected)]
    endpoint = Endpoint.from_args(args)
    cache = ScoreCache(args.cache)
    try:
        by_model = score_items(items, cache, endpoint)
    finally:
        cache.close()
    rules = {"human_tie": HUMAN_TIE_RULE, "model_tie": MODEL_TIE_RULE, "tie_tolerance": args.tie_tolerance}
    result = {"task": task, "data": str(args.data), **extra, "limit": args.limit, "rules": rules, "ci": CI_METHOD}
    blocks = {
        model: evaluate(pairs, scores, args.tie_tolerance) | scores.problems() | {"run": scores.stats}
        for model, scores in by_model.items()
    }
    result |= model_blocks(blocks)
    failed = sum(len(scores.failed) for scores in by_model.values())
    return Report(task, result, markdown(title, result), failed=failed)


def run_pairs(args: argparse.Namespace) -> Report:
    fmt, pairs = load_pairs(args.data, args.images_root, args.format, args.limit)
    title = f"Preference accuracy: {args.data.name} ({fmt})"
    return _report("pairs", title, pairs, args, {"format": fmt})


def run_ranking(args: argparse.Namespace) -> Report:
    fmt, lists = load_lists(args.data, args.images_root, args.format, args.limit)
    pairs = [pair for ranked in lists for pair in ranked.pairs()]
    extra = {"format": fmt, "lists": len(lists), "images": sum(len(ranked.images) for ranked in lists)}
    title = f"Ranking accuracy over all pairs: {args.data.name} ({fmt}, {len(lists)} lists)"
    return _report("ranking", title, pairs, args, extra)
