"""Streaming normal equations equal batch least squares; R²; distributed reduction hook."""
from __future__ import annotations

import torch

from qwt_core import NormalEquations


def _lstsq(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    xa = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(xa, y).solution
    pred = xa @ sol
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    return sol[:-1], sol[-1], float(r2)


def test_streaming_solve_equals_lstsq_on_concatenated_data() -> None:
    d, o = 16, 12
    w_true, b_true = torch.randn(d, o), torch.randn(o)
    batches = []
    for n in (50, 137, 1, 80):
        x = torch.randn(n, d, dtype=torch.float64) * 2 + 1
        batches.append((x, x @ w_true.double() + b_true.double() + 0.3 * torch.randn(n, o, dtype=torch.float64)))
    acc = NormalEquations(d, o)
    for x, y in batches:
        acc.update(x.float(), y.float())
    sol = acc.solve()
    X = torch.cat([x.float().double() for x, _ in batches])
    Y = torch.cat([y.float().double() for _, y in batches])
    w_ref, b_ref, r2_ref = _lstsq(X, Y)
    torch.testing.assert_close(sol.weight[0].double(), w_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sol.bias[0].double(), b_ref, rtol=1e-5, atol=1e-5)
    assert abs(sol.r2 - r2_ref) < 1e-9
    assert acc.count == 268


def test_grouped_accumulator_is_independent_per_group() -> None:
    g, d, o = 3, 5, 2
    x, y = torch.randn(200, g, d), torch.randn(200, g, o)
    acc = NormalEquations(d, o, groups=g)
    acc.update(x[:120], y[:120])
    acc.update(x[120:], y[120:])
    sol = acc.solve()
    for i in range(g):
        w_ref, b_ref, _ = _lstsq(x[:, i].double(), y[:, i].double())
        torch.testing.assert_close(sol.weight[i].double(), w_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sol.bias[i].double(), b_ref, rtol=1e-5, atol=1e-6)


def test_reduce_hook_sums_shards_like_one_process() -> None:
    x, y = torch.randn(300, 8), torch.randn(300, 3)
    full = NormalEquations(8, 3)
    full.update(x, y)
    shards = [NormalEquations(8, 3) for _ in range(3)]
    for i, s in enumerate(shards):
        s.update(x[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100])
    # a stand-in for dist.all_reduce(SUM): every rank ends with the sum of all shards
    stats = [(s.A.clone(), s.B.clone(), s.yy.clone()) for s in shards]
    for s in shards:
        it = iter([sum(t[0] for t in stats), sum(t[1] for t in stats), sum(t[2] for t in stats)])
        s.all_reduce(lambda t: t.copy_(next(it)))
    a, b = full.solve(), shards[1].solve()
    torch.testing.assert_close(a.weight, b.weight)
    assert abs(a.r2 - b.r2) < 1e-12


def test_ridge_and_singular_fallback() -> None:
    x = torch.randn(40, 4)
    x = torch.cat([x, x[:, :1]], 1)  # duplicated column: XᵀX singular
    y = x[:, :2] * 3
    acc = NormalEquations(5, 2)
    acc.update(x, y)
    s = acc.solve("lstsq")
    assert torch.isfinite(s.weight).all() and s.r2 > 0.999
    # the reference's fp32 inverse fails on an exactly singular XᵀX: no positive R², zero compensation
    assert acc.solve("reference").r2 == float("-inf")
    ridge = NormalEquations(5, 2, ridge=1e-3)
    ridge.update(x, y)
    xa = torch.cat([x, torch.ones(40, 1)], 1).double()
    want = torch.linalg.solve(xa.T @ xa + 1e-3 * torch.eye(6, dtype=torch.float64), xa.T @ y.double())
    torch.testing.assert_close(ridge.solve().weight[0].double(), want[:-1], rtol=1e-5, atol=1e-6)
