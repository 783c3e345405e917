"""Pairwise losses on (mu, log_sigma) of the preferred and the other image; `LOSSES` names them.

`uncertainty` is the official HPSv3 loss: z ~ N(mu1 − mu2, sigma1² + sigma2²), loss = E[−log σ(z)].
The official trainer estimates it from 1000 fp16 Monte-Carlo samples per pair; here it is computed
deterministically (same expectation, no noise, smooth gradients):

- narrow z (s < `NARROW`): Gauss–Hermite quadrature in the standardised variable, where softplus is
  analytic far beyond the nodes' reach, so 64 nodes are exact to float64 rounding;
- wide z: E[softplus(−z)] = ∫ σ(−t) Φ((t − m)/s) dt (integration by parts), an integrand analytic in
  a strip around the real axis whatever s is, so the trapezoid rule on a fixed step is exact to
  rounding; m < 0 uses softplus(−z) = −z + softplus(z) so the window stays short.

`bt`, `btt` and `constant_margin` follow the official trainer on mu (the first output).
Tied pairs (`tied`, from `data.tied_threshold`) are masked out, except in `btt`, which models ties.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch.nn import functional as F

HERMITE_NODES = 64
NARROW = 1.0  # s below this: Gauss–Hermite; at or above: the trapezoid over t
TRAPEZOID_STEP = 0.125
TAIL = 40.0  # σ(−t) < 5e-18 beyond t = TAIL
WINDOW_SIGMAS = 9.0  # Φ(−9) ≈ 1e-19: the left end of the t window is m − 9 s
MAX_TRAPEZOID_POINTS = 1 << 16  # caps memory for absurd s (> ~900); the step then grows
CONSTANT_MARGIN = 0.57  # the official constant_margin loss
BTT_K = 5.0  # the official Bradley–Terry-with-ties k


@cache
def _hermite(dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = np.polynomial.hermite.hermgauss(HERMITE_NODES)
    as_tensor = lambda values: torch.tensor(values, dtype=dtype, device=device)  # noqa: E731
    return as_tensor(nodes * math.sqrt(2.0)), as_tensor(weights / math.sqrt(math.pi))


def _gauss_hermite(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    nodes, weights = _hermite(m.dtype, str(m.device))
    z = m[:, None] + s[:, None] * nodes
    return (F.softplus(-z) * weights).sum(-1)


def _trapezoid(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """∫ σ(−t) Φ((t − m)/s) dt for m ≥ 0 over [m − 9 s, TAIL] (empty when m − 9 s ≥ TAIL: then ≈ 0)."""
    low = torch.clamp(m - WINDOW_SIGMAS * s, max=TAIL)
    span = TAIL - low
    points = int(min(MAX_TRAPEZOID_POINTS, math.ceil(float(span.detach().max()) / TRAPEZOID_STEP) + 1))
    grid = torch.linspace(0.0, 1.0, points, dtype=m.dtype, device=m.device)
    t = low[:, None] + span[:, None] * grid
    integrand = torch.sigmoid(-t) * torch.special.ndtr((t - m[:, None]) / s[:, None])
    step = span / (points - 1)
    return step * (integrand.sum(-1) - 0.5 * (integrand[:, 0] + integrand[:, -1]))


def expected_softplus(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[−log σ(z)] for z ~ N(m, s²), elementwise over 1-D tensors (differentiable in m and s)."""
    narrow = s < NARROW
    result = _gauss_hermite(m, torch.where(narrow, s, torch.zeros_like(s)))
    if bool((~narrow).any()):
        flip = m < 0  # softplus(−z) = −z + softplus(z): E = −m + E over N(−m, s²)
        wide_s = torch.where(narrow, torch.ones_like(s), s)
        mirrored = torch.where(flip, -m, m)  # not abs(): its zero gradient at m = 0 would be wrong here
        wide = _trapezoid(mirrored, wide_s) + torch.where(flip, -m, torch.zeros_like(m))
        result = torch.where(narrow, result, wide)
    return result


def uncertainty_loss(chosen: torch.Tensor, rejected: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """The official loss E[−log σ(z)], z ~ N(mu1 − mu2, sigma1² + sigma2²), computed deterministically."""
    m = chosen[:, 0] - rejected[:, 0]
    s = torch.sqrt(torch.exp(2 * chosen[:, 1]) + torch.exp(2 * rejected[:, 1]))
    return _masked_mean(expected_softplus(m.double(), s.double()).to(m.dtype), ~tied)


def bt_loss(chosen: torch.Tensor, rejected: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry on mu: −log σ(mu1 − mu2)."""
    return _masked_mean(-F.logsigmoid(chosen[:, 0] - rejected[:, 0]), ~tied)


def constant_margin_loss(chosen: torch.Tensor, rejected: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry with the official constant margin 0.57: −log σ(mu1 − mu2 − 0.57)."""
    return _masked_mean(-F.logsigmoid(chosen[:, 0] - rejected[:, 0] - CONSTANT_MARGIN), ~tied)


def btt_loss(chosen: torch.Tensor, rejected: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry with ties (k = 5): decided pairs as BT with margin log k, tied pairs pulled together."""
    diff, log_k = chosen[:, 0] - rejected[:, 0], math.log(BTT_K)
    decided = -F.logsigmoid(diff - log_k)
    same = -F.logsigmoid(diff - log_k) - F.logsigmoid(-diff - log_k) - math.log(BTT_K**2 - 1)
    return torch.where(tied, same, decided).mean()


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept pairs, as the official trainer (mean of loss × mask over the whole batch)."""
    return (values * keep.to(values.dtype)).mean()


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, LossFn] = {
    "uncertainty": uncertainty_loss,
    "bt": bt_loss,
    "btt": btt_loss,
    "constant_margin": constant_margin_loss,
}
