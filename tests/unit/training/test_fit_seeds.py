"""The fitting core replays the seed tutorials' recipes and reproduces their printed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.evaluation import least_squares, mse
from training.fit import FitConfig, FitDivergedError, fit_linear

# Plain SGD with a fixed number of epochs, no standardization: the seeds' own loop.
PLAIN = {"standardize": False, "adapt_lr": False, "early_stop": False}


def test_seed_001_weight_and_bias_at_epoch_1900() -> None:
    # x=[1,2,3], y=2x, W=b=0, full-batch SGD lr 0.01; epoch 1900 prints after its step.
    x = torch.tensor([[1.0], [2.0], [3.0]])
    result = fit_linear(
        x, 2 * x, FitConfig(epochs=1901, lr=0.01, **PLAIN), init=(torch.zeros(1), torch.zeros(1))
    )
    assert round(result.model.weight.item(), 3) == 1.997
    assert round(result.model.bias.item(), 3) == 0.008


def test_seed_003_four_steps_of_half_squared_error() -> None:
    half_mse = lambda pred, target: 0.5 * F.mse_loss(pred, target)  # noqa: E731
    result = fit_linear(
        torch.eye(3),
        torch.tensor([[1.0], [2.0], [3.0]]),
        FitConfig(epochs=4, lr=1.0, loss_fn=half_mse, **PLAIN),
        init=(torch.ones(3), torch.zeros(1)),
    )
    np.testing.assert_allclose(result.model.weight.numpy()[0], [0.4444, 1.2469, 2.0494], atol=5e-5)
    assert result.model.bias.item() == pytest.approx(0.7407, abs=5e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_002_reaches_least_squares(seed: int) -> None:
    torch.manual_seed(seed)
    x = torch.rand(100, 1)
    y = 3 * x + 2 + torch.rand(100, 1)
    result = fit_linear(x, y, FitConfig(epochs=3000, lr=0.01, seed=seed, **PLAIN))
    ls = least_squares(x.numpy(), y.numpy())
    assert result.model.weight.item() == pytest.approx(ls.weight[0, 0], abs=0.05)
    assert result.model.bias.item() == pytest.approx(ls.bias[0], abs=0.05)


def seed_000_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Seed 000's draw: data first, then the Linear's init from the same generator."""
    torch.manual_seed(seed)
    x = torch.randn(100, 1) * 10
    y = x + 3 * torch.randn(100, 1)
    init = nn.Linear(1, 1)
    return x, y, (init.weight.detach(), init.bias.detach())


def test_seed_000_converges_for_torch_seed_1() -> None:
    x, y, init = seed_000_problem(1)
    result = fit_linear(x, y, FitConfig(epochs=100, lr=0.01, **PLAIN), init=init)
    ls = least_squares(x.numpy(), y.numpy())
    optimal = mse(ls.predict(x.numpy()), y.numpy())
    with torch.no_grad():
        fitted = mse(result.model(x).numpy(), y.numpy())
    assert fitted <= optimal * 1.01


def test_seed_000_divergence_is_detected_for_torch_seed_0() -> None:
    x, y, init = seed_000_problem(0)
    with pytest.raises(
        FitDivergedError, match=r"lower the learning rate \(--lr\) or leave out --no-standardize"
    ):
        fit_linear(x, y, FitConfig(epochs=100, lr=0.01, **PLAIN), init=init)


def test_seed_000_is_fine_once_standardized() -> None:
    x, y, _ = seed_000_problem(0)
    result = fit_linear(x, y, FitConfig(epochs=500, lr=0.1))
    ls = least_squares(x.numpy(), y.numpy())
    assert result.converged
    assert result.model.weight.item() == pytest.approx(ls.weight[0, 0], rel=1e-3)


def test_non_finite_loss_is_divergence() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0]])
    with pytest.raises(FitDivergedError, match="diverged"):
        fit_linear(x, 2 * x, FitConfig(epochs=50, lr=1e30, **PLAIN))


def test_slow_growth_is_divergence_too() -> None:
    # lr just above the stability limit: the loss creeps up without reaching 1000x.
    x = torch.tensor([[-1.0], [1.0]])
    y = torch.tensor([[0.0], [0.0]])
    with pytest.raises(FitDivergedError, match="grew from"):
        fit_linear(x, y, FitConfig(epochs=20, lr=1.01, **PLAIN), init=(torch.ones(1), torch.zeros(1)))
