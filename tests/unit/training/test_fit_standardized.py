"""Standardized fitting: the scaling is folded back so the module works on raw values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.fit import FitConfig, Preconditioner, fit_linear


def test_fold_back_is_exact() -> None:
    torch.manual_seed(0)
    x = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([10.0, 40.0, 15.0]) + 70
    y = torch.randn(50, 2, dtype=torch.float64) * 30 + 80
    x[:, 2] = 0.5 * x[:, 0] + 0.01 * x[:, 2]  # nearly collinear: whitening is not diagonal
    pre = Preconditioner.fit(x, y, enabled=True)
    z = pre.inputs(x)
    torch.testing.assert_close(z.T @ z / len(z), torch.eye(3, dtype=torch.float64))  # whitened
    inner = torch.nn.Linear(3, 2, dtype=torch.float64)
    with torch.no_grad():
        expected = inner(z) * pre.y_scale + pre.y_mean
    raw = pre.fold(inner)
    torch.testing.assert_close(raw(x), expected)


def test_recovers_known_weights_for_many_columns() -> None:
    # The core is not tied to 3 -> 2: 5 features, 4 targets, noiseless data.
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 5, generator=gen, dtype=torch.float64) * 3
    bias = torch.randn(4, generator=gen, dtype=torch.float64) * 10
    x = torch.randn(400, 5, generator=gen, dtype=torch.float64) * 20 + 50
    y = x @ weight.T + bias
    result = fit_linear(x, y, FitConfig(batch_size=64, lr=0.1))
    assert result.converged
    np.testing.assert_allclose(result.model.weight.numpy(), weight.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.model.bias.numpy(), bias.numpy(), rtol=1e-3, atol=1e-2)


def test_constant_target_does_not_divide_by_zero() -> None:
    x = torch.arange(10.0).reshape(-1, 1)
    y = torch.full((10, 1), 7.0)
    result = fit_linear(x, y, FitConfig(batch_size=5))
    assert result.model(torch.tensor([[100.0]])).item() == pytest.approx(7.0, abs=1e-4)


def test_same_seed_same_model() -> None:
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(2))
    y = x @ torch.tensor([[1.0, 2.0, 3.0]]).T + 0.1 * torch.randn(
        30, 1, generator=torch.Generator().manual_seed(3)
    )
    a = fit_linear(x, y, FitConfig(batch_size=5, seed=7))
    b = fit_linear(x, y, FitConfig(batch_size=5, seed=7))
    c = fit_linear(x, y, FitConfig(batch_size=5, seed=8))
    assert torch.equal(a.model.weight, b.model.weight)
    assert a.losses == b.losses
    assert not torch.equal(a.model.weight, c.model.weight)


def test_epoch_limit_reports_not_converged() -> None:
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(2))
    y = x.sum(dim=1, keepdim=True)
    result = fit_linear(x, y, FitConfig(epochs=3, batch_size=5))
    assert result.epochs_run == 3
    assert not result.converged
    assert len(result.losses) == 3
