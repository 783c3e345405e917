"""The deterministic uncertainty loss against 10⁶-sample Monte-Carlo estimates; the other losses by formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from hpsv3_training.losses import LOSSES, expected_softplus, uncertainty_loss

SAMPLES = 1_000_000
# (Δmu, log_sigma of each image): narrow and wide z, both signs, far tails, the Gauss–Hermite/trapezoid border
CASES = [
    (0.0, -7.0, -7.0),
    (0.0, 0.0, 0.0),
    (0.7, -0.35, -0.35),  # s just below 1: Gauss–Hermite
    (0.7, -0.34, -0.34),  # s just above 1: trapezoid
    (2.0, -1.0, 0.5),
    (-3.0, 0.5, 0.7),
    (10.0, 2.0, 2.3),
    (-40.0, 1.0, 0.0),
    (25.0, -2.0, -3.0),
    (0.3, 4.0, 3.5),
    (-8.0, 4.6, 4.6),
    (60.0, 3.0, 3.0),
]


def _z(delta: float, log_a: float, log_b: float) -> tuple[float, float]:
    return delta, math.sqrt(math.exp(2 * log_a) + math.exp(2 * log_b))


def _stratified_mc(m: float, s: float, generator: torch.Generator) -> float:
    """10⁶ samples, one per equal-probability stratum of N(m, s²) (float64): the estimate to hold 1e-4 against."""
    u = torch.arange(SAMPLES, dtype=torch.float64) + torch.rand(SAMPLES, dtype=torch.float64, generator=generator)
    z = m + s * torch.special.ndtri(u / SAMPLES)
    return float(F.softplus(-z).mean())


def _plain_mc(m: float, s: float, generator: torch.Generator) -> tuple[float, float]:
    """Plain 10⁶-sample estimate (what the official 1000-sample estimator scales up to) and its standard error."""
    values = F.softplus(-(m + s * torch.randn(SAMPLES, dtype=torch.float64, generator=generator)))
    return float(values.mean()), float(values.std() / math.sqrt(SAMPLES))


@pytest.mark.parametrize(("delta", "log_a", "log_b"), CASES)
def test_uncertainty_loss_matches_a_million_sample_monte_carlo(delta: float, log_a: float, log_b: float) -> None:
    generator = torch.Generator().manual_seed(0)
    chosen = torch.tensor([[delta, log_a]], dtype=torch.float64)
    rejected = torch.tensor([[0.0, log_b]], dtype=torch.float64)
    loss = float(uncertainty_loss(chosen, rejected, torch.tensor([False])))
    m, s = _z(delta, log_a, log_b)
    assert loss == pytest.approx(_stratified_mc(m, s, generator), abs=1e-4)
    plain, error = _plain_mc(m, s, generator)
    assert abs(loss - plain) <= 5 * error + 1e-12  # the plain estimate agrees within its own noise


def test_uncertainty_loss_is_smooth_and_differentiable() -> None:
    m = torch.tensor([-5.0, -0.4, 0.0, 0.3, 2.0, 9.0], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.05, 0.8, 1.0, 1.3, 4.0, 20.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(expected_softplus, (m, s))
    # dE/dm = −E[σ(−z)]: checked against the stratified estimate of that expectation
    (grad_m,) = torch.autograd.grad(expected_softplus(m, s).sum(), m)
    generator = torch.Generator().manual_seed(1)
    for index in range(len(m)):
        u = torch.arange(SAMPLES, dtype=torch.float64) + torch.rand(SAMPLES, dtype=torch.float64, generator=generator)
        z = m[index].detach() + s[index].detach() * torch.special.ndtri(u / SAMPLES)
        assert float(grad_m[index]) == pytest.approx(-float(torch.sigmoid(-z).mean()), abs=1e-4)


def test_uncertainty_loss_equals_the_official_estimator_in_expectation() -> None:
    """The official trainer: mean of −logsigmoid over 1000 fp16 samples per pair; averaged over many draws."""
    torch.manual_seed(0)
    chosen, rejected = torch.tensor([[1.2, 0.1], [-0.5, -1.0]]), torch.tensor([[0.4, 0.3], [0.5, 0.2]])
    mean_z = chosen[:, 0] - rejected[:, 0]
    sigma_z = torch.sqrt(torch.exp(chosen[:, 1]) ** 2 + torch.exp(rejected[:, 1]) ** 2)
    draws = [
        -F.logsigmoid(torch.randn(2, 1000).to(torch.float16) * sigma_z[:, None] + mean_z[:, None]).mean()
        for _ in range(200)
    ]
    ours = float(uncertainty_loss(chosen, rejected, torch.tensor([False, False])))
    assert ours == pytest.approx(float(torch.stack(draws).mean()), abs=3e-3)


def test_bt_btt_and_margin_losses_follow_the_official_formulas() -> None:
    chosen, rejected = torch.tensor([[2.0, 0.0], [0.5, 0.0]]), torch.tensor([[1.0, 3.0], [1.5, -2.0]])
    decided, tied = torch.tensor([False, False]), torch.tensor([False, True])
    diff = torch.tensor([1.0, -1.0])
    assert LOSSES["bt"](chosen, rejected, decided) == pytest.approx(float(-F.logsigmoid(diff).mean()))
    assert LOSSES["bt"](chosen, rejected, tied) == pytest.approx(float(-F.logsigmoid(diff[:1]).sum() / 2))
    assert LOSSES["constant_margin"](chosen, rejected, decided) == pytest.approx(
        float(-F.logsigmoid(diff - 0.57).mean())
    )
    log_k = math.log(5.0)
    same = -F.logsigmoid(diff[1] - log_k) - F.logsigmoid(-diff[1] - log_k) - math.log(24.0)
    expected = (-F.logsigmoid(diff[0] - log_k) + same) / 2
    assert LOSSES["btt"](chosen, rejected, tied) == pytest.approx(float(expected))
