"""The two QwT regressions: float64 normal equations equal batch least squares; kept rows give the
released fp32 solution bit for bit; both take the ResNet SS_tot per position; the gate; presets."""
from __future__ import annotations

import math

import pytest
import torch

from qwt_core import SOLVER_PRESETS, NormalEquations, QwTConfig, ReferenceRows, Solution, gate
from qwt_core.qwt.driver import _columns

pytestmark = pytest.mark.machine_kernels  # LAPACK / GEMM results compared (make test reruns it under ISA caps)


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
        s.all_reduce(lambda t, it=it: t.copy_(next(it)))
    a, b = full.solve(), shards[1].solve()
    torch.testing.assert_close(a.weight, b.weight)
    assert abs(a.r2 - b.r2) < 1e-12


def test_ridge_and_singular_fallback() -> None:
    x = torch.randn(40, 4)
    x = torch.cat([x, x[:, :1]], 1)  # duplicated column: XᵀX singular
    y = x[:, :2] * 3
    acc = NormalEquations(5, 2)
    acc.update(x, y)
    s = acc.solve()
    assert torch.isfinite(s.weight).all() and s.r2 > 0.999
    # the reference's fp32 inverse fails on an exactly singular XᵀX: no positive R², zero compensation
    assert s.r2_reference == float("-inf")
    ridge = NormalEquations(5, 2, ridge=1e-3)
    ridge.update(x, y)
    xa = torch.cat([x, torch.ones(40, 1)], 1).double()
    want = torch.linalg.solve(xa.T @ xa + 1e-3 * torch.eye(6, dtype=torch.float64), xa.T @ y.double())
    torch.testing.assert_close(ridge.solve().weight[0].double(), want[:-1], rtol=1e-5, atol=1e-6)


def _reference_token_regression(X: torch.Tensor, Y: torch.Tensor):
    """The released lienar_regression (ViT/DeiT/Swin), statement for statement."""
    X = X.reshape(-1, X.size(-1))
    X_add_one = torch.cat([X, torch.ones(size=[X.size(0), ], device=X.device).reshape(-1, 1)], dim=-1)
    Y = Y.reshape(-1, Y.size(-1))
    X_add_one_T = X_add_one.t()
    W_overall = torch.inverse(X_add_one_T @ X_add_one) @ X_add_one_T @ Y
    W, b = W_overall[:-1, :], W_overall[-1, :]
    Y_pred = X @ W + b
    r2 = 1 - torch.sum((Y - Y_pred).pow(2)) / torch.sum((Y - Y.mean(dim=0)).pow(2))
    return W, b, float(r2)


def _reference_conv_regression(X: torch.Tensor, Y: torch.Tensor, kernel_size: int, groups: int):
    """The released ResNet lienar_regression (grouped conv), statement for statement."""
    B, C_X, H_X, W_X = X.size()
    _, C_Y, H_Y, W_Y = Y.size()
    stride = 1 if (H_X == H_Y) and (W_X == W_Y) else 2
    C_per_group, _C_per_group = C_X // groups, C_Y // groups
    unfold = torch.nn.Unfold(kernel_size=kernel_size, stride=stride, padding=int(kernel_size // 2))
    weights_list, bias_list = [], []
    for g in range(groups):
        X_unfold_group = unfold(X[:, g * C_per_group: (g + 1) * C_per_group, :, :])
        Y_flat_group = Y[:, g * _C_per_group: (g + 1) * _C_per_group, :, :].reshape(B, _C_per_group, -1)
        X_batch_all = X_unfold_group.permute(0, 2, 1).reshape(-1, C_per_group * kernel_size * kernel_size)
        Y_batch_all = Y_flat_group.permute(0, 2, 1).reshape(-1, _C_per_group)
        X_with_bias = torch.cat([X_batch_all, torch.ones(X_batch_all.shape[0], 1)], dim=1)
        XTX = X_with_bias.T @ X_with_bias
        W = torch.inverse(XTX + 1e-3 * torch.eye(XTX.shape[0])) @ X_with_bias.T @ Y_batch_all
        weights_list.append(W[:-1, :].T)
        bias_list.append(W[-1, :])
    W = torch.cat(weights_list, dim=0).view(C_Y, C_X // groups, kernel_size, kernel_size)
    b = torch.cat(bias_list, dim=0)
    Y_pred = torch.nn.functional.conv2d(X, W, b, stride=stride, padding=kernel_size // 2, groups=groups)
    r2 = 1 - torch.sum((Y - Y_pred).pow(2)) / torch.sum((Y - Y.mean(dim=0)).pow(2))
    return W, b, float(r2)


def test_kept_rows_give_the_reference_token_solution_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 50, 24, generator=g) * torch.linspace(0.1, 3, 24)  # (images, tokens, D)
    y = x @ torch.randn(24, 16, generator=g) * 0.1 + torch.randn(6, 50, 16, generator=g)
    acc = ReferenceRows(24, 16)
    for i in range(0, 6, 4):  # two batches, as the driver feeds them
        acc.update(x[i:i + 4].reshape(-1, 24), y[i:i + 4].reshape(-1, 16))
    acc.all_reduce()
    sol = acc.solve()
    W, b, r2 = _reference_token_regression(x, y)
    assert torch.equal(sol.weight[0], W) and torch.equal(sol.bias[0], b)
    assert sol.r2 == pytest.approx(r2, rel=1e-5) and sol.r2_reference == sol.r2
    assert acc.count == 300


def _conv_data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(4, 8, 10, 10, generator=g))
    y = torch.nn.functional.conv2d(x, torch.randn(12, 8, 3, 3, generator=g) * 0.1, stride=2, padding=1)
    return x, y + torch.randn(y.shape, generator=g) * 0.05


def test_kept_rows_give_the_reference_grouped_conv_solution_bit_for_bit() -> None:
    """Columns as the driver lays them out (:func:`_columns`), rows unfolded by ReferenceRows: the
    released ResNet regression's W, b bit for bit, and its R² (SS_tot per output position)."""
    from qwt_core.qwt.compensation import ConvCompensation
    x, y = _conv_data()
    cfg = QwTConfig(kernel_size=3, factor=4)  # 8 channels // 4 = 2 groups
    acc = None
    for i in (0, 2):
        xc, yc, geom = _columns(x[i:i + 2], y[i:i + 2], cfg)  # (B, G, D, h, w), (B, G, O/G, h, w)
        acc = acc or ReferenceRows(xc.shape[2], yc.shape[2], xc.shape[1], ridge=cfg.conv_ridge)
        acc.update_columns(xc, yc)
    assert acc is not None and geom["groups"] == 2
    acc.all_reduce()
    sol = acc.solve()
    W, b, r2 = _reference_conv_regression(x, y, 3, 2)
    comp = ConvCompensation.from_solution(sol, 8, 3, 2)
    assert torch.equal(comp.weight, W) and torch.equal(comp.bias, b)
    assert sol.r2 == pytest.approx(r2, rel=1e-4)


def test_both_regressions_agree_on_conv_columns() -> None:
    """The same columns into both regressions: W, b agree to fp32 rounding of a well-conditioned
    system, and the float64 R² (SS_tot per position, kept inside the regression) is the rows' R²."""
    x, y = _conv_data(2)
    cfg = QwTConfig(kernel_size=3, factor=4)
    xc, yc, _ = _columns(x, y, cfg)
    rows = ReferenceRows(xc.shape[2], yc.shape[2], xc.shape[1], ridge=cfg.conv_ridge)
    sums = NormalEquations(xc.shape[2], yc.shape[2], xc.shape[1], ridge=cfg.conv_ridge)
    for reg in (rows, sums):
        reg.update_columns(xc[:3], yc[:3])
        reg.update_columns(xc[3:], yc[3:])
        reg.all_reduce()
    a, b = rows.solve(), sums.solve()
    torch.testing.assert_close(b.weight, a.weight, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(b.bias, a.bias, rtol=1e-3, atol=1e-4)
    assert b.r2 == pytest.approx(a.r2, abs=1e-4) and b.r2_reference == pytest.approx(a.r2, abs=1e-4)
    assert rows.count == sums.count == 4 * 5 * 5
    assert rows.residual(a) == pytest.approx(sums.residual(a), rel=1e-6)


def test_update_columns_equals_update_on_unfolded_rows() -> None:
    """NormalEquations: column layout and row layout give the same sums (float64 rounding)."""
    x, y = _conv_data(3)
    xc, yc, _ = _columns(x, y, QwTConfig(kernel_size=3, factor=4))
    G, D, O = xc.shape[1], xc.shape[2], yc.shape[2]
    cols, rows = NormalEquations(D, O, G), NormalEquations(D, O, G)
    cols.update_columns(xc, yc)
    order = (0, 3, 4, 1, 2)  # rows (b, y, x), columns (group, feature)
    rows.update(xc.permute(order).reshape(-1, G, D), yc.permute(order).reshape(-1, G, O))
    for p, q in ((cols.A, rows.A), (cols.B, rows.B), (cols.yy, rows.yy)):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-9)


def test_gate() -> None:
    """reference: the fp32 solution's R²; float64: the solution's own; never before start_block."""
    sol = Solution(torch.zeros(1, 2, 2), torch.zeros(1, 2), r2=0.5, r2_reference=-math.inf)
    assert gate(sol, 3, QwTConfig()) == (False, -math.inf)
    assert gate(sol, 3, QwTConfig(regression="sums", gate="float64")) == (True, 0.5)
    assert gate(sol, 3, QwTConfig(regression="sums", gate="float64", start_block=4)) == (False, 0.5)


def test_solver_presets_name_the_config() -> None:
    for name, preset in SOLVER_PRESETS.items():
        assert QwTConfig(**preset).solver == name  # type: ignore[arg-type]
    assert QwTConfig().solver == "reference"
    with pytest.raises(ValueError, match="needs regression='sums'"):
        QwTConfig(regression="rows", gate="float64")
    with pytest.raises(ValueError, match="regression"):
        QwTConfig(regression="all")  # type: ignore[arg-type]


@pytest.mark.parametrize("groups", [1, 2])
def test_reserved_rows_give_the_same_solution_with_a_short_last_batch(groups: int) -> None:
    """``reserve`` (the driver's hint: batches x the first batch's rows) fills buffers in place; a
    short last batch leaves room unused, a batch past the room goes to a piece of its own: W, b, R²
    and the row count are those of the rows kept without a hint."""
    g = torch.Generator().manual_seed(groups)
    x = torch.relu(torch.randn(7, 4 * groups, 5, 5, generator=g))
    y = torch.randn(7, 3 * groups, 5, 5, generator=g)
    cfg = QwTConfig(kernel_size=1, factor=4)

    def fit(reserve: int | None) -> tuple[ReferenceRows, Solution]:
        acc = ReferenceRows(4, 3, groups, ridge=cfg.conv_ridge)
        for i in (0, 3, 6):  # batches of 3, 3, 1 images
            xc, yc, _ = _columns(x[i:i + 3], y[i:i + 3], cfg)
            if reserve is not None and i == 0:
                acc.reserve(reserve, xc)
            acc.update_columns(xc, yc)
        acc.all_reduce()
        return acc, acc.solve()

    (plain, a), (roomy, b), (tight, c) = fit(None), fit(3 * 3 * 25), fit(2 * 3 * 25)  # 9 / 6 images of room
    for sol in (b, c):
        assert torch.equal(sol.weight, a.weight) and torch.equal(sol.bias, a.bias) and sol.r2 == a.r2
    assert plain.count == roomy.count == tight.count == 7 * 25
    assert float(roomy.yy) == pytest.approx(float((y.double() ** 2).sum()), rel=1e-6)
