"""Grouped-conv QwT fit equals least squares on unfolded patches, per group."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwt_core import ConvCompensation, NormalEquations
from qwt_core.qwt.compensation import conv_rows, unfold_groups


@pytest.mark.parametrize("kernel,stride,groups", [(1, 1, 1), (3, 1, 2), (1, 2, 4), (3, 2, 2)])
def test_grouped_fit_equals_lstsq_on_unfolded_patches(kernel: int, stride: int, groups: int) -> None:
    cin, cout = 8, 12
    x = torch.randn(6, cin, 9, 9)
    h = (9 + 2 * (kernel // 2) - kernel) // stride + 1
    y = torch.randn(6, cout, h, h)
    acc = NormalEquations(cin // groups * kernel**2, cout // groups, groups, ridge=1e-3)
    for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):
        acc.update(unfold_groups(xb, kernel, stride, groups), conv_rows(yb, groups))
    sol = acc.solve()
    comp = ConvCompensation.from_solution(sol, cin, kernel, stride, fp16_eval=False).train()
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


def test_fp16_eval_path() -> None:
    comp = ConvCompensation(4, 4, 1, 1, 1, fp16_eval=True)
    torch.nn.init.normal_(comp.weight)
    torch.nn.init.normal_(comp.bias)
    x = torch.randn(2, 4, 5, 5)
    want = F.conv2d(x.half(), comp.weight.half()).float() + comp.bias[:, None, None]
    torch.testing.assert_close(comp.eval()(x), want, rtol=0, atol=0)
    torch.testing.assert_close(comp.train()(x), F.conv2d(x, comp.weight, comp.bias), rtol=0, atol=0)
