"""Grouped-conv QwT fit equals least squares on unfolded patches, per group, for both regressions;
the evaluation arithmetic is a context read at forward time."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwt_core import ConvCompensation, NormalEquations, QwTConfig, ReferenceRows, eval_arithmetic
from qwt_core.qwt.driver import _columns


@pytest.mark.parametrize("regression", [NormalEquations, ReferenceRows])
@pytest.mark.parametrize("kernel,stride,groups", [(1, 1, 1), (3, 1, 2), (1, 2, 4), (3, 2, 2)])
def test_grouped_fit_equals_lstsq_on_unfolded_patches(regression: type, kernel: int, stride: int,
                                                      groups: int) -> None:
    cin, cout = 8, 12
    x = torch.randn(6, cin, 10, 10)
    h = (10 + 2 * (kernel // 2) - kernel) // stride + 1
    y = torch.randn(6, cout, h, h)
    cfg = QwTConfig(kernel_size=kernel, factor=cin // groups)
    acc = regression(cin // groups * kernel**2, cout // groups, groups, ridge=1e-3)
    for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):
        xc, yc, geom = _columns(xb, yb, cfg)  # the driver's column layout
        assert (geom["stride"], geom["groups"]) == (stride, groups)
        acc.update_columns(xc, yc)
    acc.all_reduce()
    sol = acc.solve()
    comp = ConvCompensation.from_solution(sol, cin, kernel, stride).train()
    # re-derive: explicit patches of each group, ridge solve, and compare predictions
    patches = F.unfold(x, kernel, padding=kernel // 2, stride=stride).transpose(1, 2).reshape(-1, cin * kernel**2)
    targets = y.permute(0, 2, 3, 1).reshape(-1, cout)
    pred = torch.empty_like(targets, dtype=torch.float64)
    dg, og = cin * kernel**2 // groups, cout // groups
    for g in range(groups):
        xa = torch.cat([patches[:, g * dg:(g + 1) * dg], torch.ones(len(patches), 1)], 1).double()
        w = torch.linalg.solve(xa.T @ xa + 1e-3 * torch.eye(dg + 1, dtype=torch.float64),
                               xa.T @ targets[:, g * og:(g + 1) * og].double())
        pred[:, g * og:(g + 1) * og] = xa @ w
    out = comp(x).permute(0, 2, 3, 1).reshape(-1, cout)
    assert comp(x).shape == y.shape
    torch.testing.assert_close(out.double(), pred, rtol=1e-4, atol=1e-5)


def test_eval_arithmetic_is_a_context_read_at_forward_time() -> None:
    """Eval mode: the fp16 product by default (the reference's classification), fp32 inside
    ``eval_arithmetic(fp16=False)`` (its detection), restored on exit and on an error; training
    mode is always fp32. Nothing of it is a module attribute or part of the state dict."""
    comp = ConvCompensation(4, 4, 1, 1, 1)
    torch.nn.init.normal_(comp.weight)
    torch.nn.init.normal_(comp.bias)
    x = torch.randn(2, 4, 5, 5)
    half = F.conv2d(x.half(), comp.weight.half()).float() + comp.bias[:, None, None]
    full = F.conv2d(x, comp.weight, comp.bias)
    assert not torch.equal(half, full)
    torch.testing.assert_close(comp.eval()(x), half, rtol=0, atol=0)
    with eval_arithmetic(fp16=False):
        torch.testing.assert_close(comp(x), full, rtol=0, atol=0)
        with eval_arithmetic(fp16=True):  # nested: the inner one holds
            torch.testing.assert_close(comp(x), half, rtol=0, atol=0)
        torch.testing.assert_close(comp(x), full, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), eval_arithmetic(fp16=False):
        raise RuntimeError("boom")
    torch.testing.assert_close(comp(x), half, rtol=0, atol=0)  # restored after the error
    torch.testing.assert_close(comp.train()(x), full, rtol=0, atol=0)
    assert set(comp.state_dict()) == {"weight", "bias"} and not hasattr(comp, "fp16_eval")
    with pytest.raises(ValueError, match="half_arith"), eval_arithmetic(True, "fast"):
        pass
