"""Where the server spends its time: Triton's statistics API, per model of the `hpsv3` ensemble.

`server_snapshot` reads the cumulative counters (`snapshot_after` once a measurement's answers are all counted),
`add_delta` accumulates what a measurement added between two
snapshots, `server_breakdown` turns the totals into queue/compute ms per request and images per execution.
"""

from __future__ import annotations

import time

SERVER_MODELS = ("hpsv3", "preprocess", "vision_encoder", "language_model", "reward_head")  # the ensemble first

Snapshot = dict[str, dict[str, float]]  # model name → cumulative counters


def server_snapshot(url: str) -> Snapshot:
    """Cumulative Triton statistics per model: request counts, ns per phase, batch executions, busy ns."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        response = client.get_inference_statistics(model_name="")
    snapshot = {}
    for model in response.model_stats:
        stats = model.inference_stats
        busy = sum(b.compute_input.ns + b.compute_infer.ns + b.compute_output.ns for b in model.batch_stats)
        snapshot[model.name] = {
            "requests": stats.success.count,
            "request_ns": stats.success.ns,
            "queue_ns": stats.queue.ns,
            "compute_ns": stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns,
            "input_ns": stats.compute_input.ns,
            "output_ns": stats.compute_output.ns,
            "executions": model.execution_count,
            "inferences": model.inference_count,
            "busy_ns": busy,
        }
    return snapshot


def snapshot_after(url: str, before: Snapshot, answered: int | None, timeout_s: float = 2.0) -> Snapshot:
    """A snapshot that counts all `answered` requests of the ensemble since `before`: Triton records a
    request's statistics just after sending its answer, so a snapshot taken the moment the client has the last
    answer can miss it. Waits at most `timeout_s`; `answered` None: no waiting."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = server_snapshot(url)
        counted = after.get(SERVER_MODELS[0], {}).get("requests", 0) - before.get(SERVER_MODELS[0], {}).get(
            "requests", 0
        )
        if answered is None or counted >= answered or time.monotonic() > deadline:
            return after
        time.sleep(0.02)


def add_delta(totals: Snapshot, before: Snapshot, after: Snapshot) -> None:
    """Add what happened between two snapshots to `totals`, for the models of the ensemble."""
    for name in after:
        if name in SERVER_MODELS:
            total = totals.setdefault(name, dict.fromkeys(after[name], 0))
            for key, value in after[name].items():
                total[key] += value - before.get(name, {}).get(key, 0)


def server_breakdown(totals: Snapshot, wall_s: float, client_mean_ms: float) -> dict:
    """Per model: queue and compute ms per request, images per execution, busy ms per image and share of wall."""
    models = {}
    for name, t in totals.items():
        requests = max(t["requests"], 1)
        models[name] = {
            "requests": t["requests"],
            "request_ms": t["request_ns"] / requests / 1e6,
            "queue_ms": t["queue_ns"] / requests / 1e6,
            "compute_ms": t["compute_ns"] / requests / 1e6,
            "compute_input_ms": t["input_ns"] / requests / 1e6,
            "compute_output_ms": t["output_ns"] / requests / 1e6,
            "avg_batch": t["inferences"] / max(t["executions"], 1),
            "busy_ms_per_image": t["busy_ns"] / requests / 1e6,
            "busy_share_of_wall": t["busy_ns"] / 1e9 / wall_s if wall_s else 0.0,
        }
    server_ms = models.get("hpsv3", {}).get("request_ms", 0.0)
    return {"models": models, "server_ms": server_ms, "transport_other_ms": client_mean_ms - server_ms}


def step_cells(breakdown: dict) -> list[str]:
    """One table cell per ensemble step: "queue / compute ms per request (b images per execution)"."""
    models = breakdown["models"]
    return [
        f"{models[n]['queue_ms']:.1f} / {models[n]['compute_ms']:.1f} (b {models[n]['avg_batch']:.1f})"
        if n in models
        else "—"
        for n in SERVER_MODELS[1:]
    ]
