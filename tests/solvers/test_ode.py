"""ODE solvers: convergence orders, adaptive tolerance, per-sample control, dense output, reverse time."""

import pytest
import torch

import solvers
from solvers.testing import LinearODE, LogisticODE, StiffRelaxation, TimeDependentODE
from tests.conftest import devices

from .helpers import fitted_slope

F64 = torch.float64

FIXED = [solvers.Euler(), solvers.Midpoint(), solvers.Heun(), solvers.RK4(),
         solvers.BogackiShampine(adaptive=False), solvers.Dopri5(adaptive=False)]
PROBLEMS = [LinearODE(), LogisticODE(r=6.0), TimeDependentODE()]


def _x0(problem, batch=6):
    g = torch.Generator().manual_seed(0)
    if isinstance(problem, LogisticODE):
        return 0.1 + 0.8 * torch.rand(batch, 3, dtype=F64, generator=g)
    if isinstance(problem, LinearODE):
        return torch.randn(batch, 2, dtype=F64, generator=g)
    return torch.randn(batch, 2, 2, dtype=F64, generator=g)


@pytest.mark.parametrize("solver", FIXED, ids=repr)
@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
@pytest.mark.parametrize("direction", [1, -1], ids=["forward", "reverse"])
def test_fixed_step_order(solver, problem, direction):
    """The global error (max over the points of the coarsest grid, so that an isolated zero of
    the error's leading term cannot mask it) falls like h^order: the slope fitted over 4 step
    sizes, each halving h, lies within 0.3 of the claimed order, with errors above round-off."""
    x0 = _x0(problem)
    t0, t1 = (0.0, 1.0) if direction > 0 else (1.0, 0.0)
    # step counts chosen so that errors are asymptotic yet well above float64 round-off
    base = {1.0: 64, 2.0: 32, 3.0: 32, 4.0: 32, 5.0: 16}[solver.order]
    common = solvers.uniform_grid(t0, t1, base)
    exact = torch.stack([problem.exact(x0, t0, t) for t in common.tolist()])
    ns = [base * 2 ** k for k in range(4)]
    errs = []
    for n in ns:
        sol = solvers.integrate(problem, x0, solvers.uniform_grid(t0, t1, n), solver, save_at=common)
        errs.append((sol.ys - exact).abs().max().item())
        assert sol.nfe == solver.nfe(n)
    slope = fitted_slope([1 / n for n in ns], errs)
    assert abs(slope - solver.order) < 0.3, (slope, errs)
    assert min(errs) > 1e-13  # at least 10x above the round-off of <= 512 float64 steps


@pytest.mark.parametrize("solver_cls", [solvers.BogackiShampine, solvers.Dopri5])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_adaptive_meets_tolerance(solver_cls, per_sample, problem):
    """With rtol = atol = tol, the error relative to 1 + |x| stays below 10 tol at the end and at
    dense-output points (local control keeps the global error proportional to the tolerance),
    and tightening tol by 100x shrinks the final error by at least 10x (tolerance proportionality;
    dense-output points are not error-controlled, so only bounded)."""
    x0 = _x0(problem)
    save = [0.0, 0.25, 0.6, 1.0]
    final = []
    for tol in (1e-4, 1e-6):
        sol = solvers.integrate(problem, x0, [0.0, 1.0], solver_cls(rtol=tol, atol=tol, per_sample=per_sample),
                                save_at=save)
        exact = torch.stack([problem.exact(x0, 0.0, t) for t in save])
        rel = (sol.ys - exact).abs() / (1 + exact.abs())
        assert rel.max().item() < 10 * tol, (tol, rel.flatten(1).amax(1))
        assert sol.n_accepted > 0 and sol.nfe > 0
        final.append(rel[-1].max().item())
    assert final[1] < final[0] / 10, final


def test_adaptive_nfe_accounting():
    """Dopri5 is FSAL: nfe = 1 (initial) + 1 (starting-step heuristic) + 6 per attempt."""
    p = LinearODE()
    sol = solvers.integrate(p, _x0(p), [0.0, 2.0], solvers.Dopri5(rtol=1e-7, atol=1e-7))
    assert sol.nfe == 2 + 6 * (sol.n_accepted + sol.n_rejected)
    sol = solvers.integrate(p, _x0(p), [0.0, 2.0], solvers.BogackiShampine(rtol=1e-5, atol=1e-5), dt0=0.5)
    assert sol.nfe == 1 + 3 * (sol.n_accepted + sol.n_rejected)
    assert sol.n_rejected >= 1  # dt0 = 0.5 is far too large for tol 1e-5


def test_batch_wide_norm_is_max_not_mean():
    """One stiff sample in an easy batch: batch-wide control uses the max over per-sample norms,
    so the stiff sample meets the tolerance as well as the easy ones."""
    rates = torch.tensor([1.0] * 31 + [200.0], dtype=F64)
    p = StiffRelaxation(rates)
    x0 = torch.full((32, 4), 2.0, dtype=F64)
    tol = 1e-6
    sol = solvers.integrate(p, x0, [0.0, 1.0], solvers.Dopri5(rtol=tol, atol=tol), save_at=[0.02, 0.5, 1.0])
    exact = torch.stack([p.exact(x0, 0.0, t) for t in (0.02, 0.5, 1.0)])
    per_sample_err = (sol.ys - exact).abs().amax(dim=(0, 2))
    assert per_sample_err.max() < 10 * tol
    # The easy-only batch takes far fewer steps: the stiff sample drove the step size.
    easy = solvers.integrate(StiffRelaxation(rates[:31]), x0[:31], [0.0, 1.0], solvers.Dopri5(rtol=tol, atol=tol))
    assert sol.n_accepted > 3 * easy.n_accepted


def test_per_sample_is_batch_invariant_and_cheaper_for_easy_samples():
    """Per-sample stepping: each sample's trajectory equals the one it gets alone, and easy
    samples take fewer steps than the stiff one."""
    rates = torch.tensor([0.5, 200.0, 2.0, 30.0], dtype=F64)
    p = StiffRelaxation(rates)
    x0 = torch.linspace(-1, 2, 4, dtype=F64).reshape(4, 1).expand(4, 3).contiguous()
    solver = solvers.Dopri5(rtol=1e-6, atol=1e-6, per_sample=True)
    save = [0.1, 0.5, 1.0]
    sol = solvers.integrate(p, x0, [0.0, 1.0], solver, save_at=save)
    for b in range(4):
        alone = solvers.integrate(StiffRelaxation(rates[b:b + 1]), x0[b:b + 1], [0.0, 1.0], solver, save_at=save)
        torch.testing.assert_close(sol.ys[:, b], alone.ys[:, 0], rtol=1e-13, atol=1e-13)
        assert int(sol.accepted_per_sample[b]) == alone.n_accepted
    acc = sol.accepted_per_sample
    assert acc[0] < acc[1] and acc[2] < acc[1]
    assert sol.n_accepted == int(acc.max())
    exact = torch.stack([p.exact(x0, 0.0, t) for t in save])
    assert (sol.ys - exact).abs().max() < 1e-5


@pytest.mark.parametrize("solver_cls", [solvers.BogackiShampine, solvers.Dopri5])
def test_dense_output_order(solver_cls):
    """Dense output: errors at interior points, with fixed-size steps, fall with the
    interpolant's order (3 for the Hermite cubic of BS3, 4 for Dopri5's continuous extension;
    slope band +-0.4, since the interpolant's error adds to the step's)."""
    p = TimeDependentODE()
    x0 = _x0(p)
    errs, hs = [], []
    for h in (0.1, 0.05, 0.025, 0.0125):
        save = [0.37, 0.81, 1.53]
        sol = solvers.integrate(p, x0, [0.0, 2.0], solver_cls(rtol=1e3, atol=1e3), save_at=save, dt0=h, max_step=h)
        exact = torch.stack([p.exact(x0, 0.0, t) for t in save])
        errs.append((sol.ys - exact).abs().max().item())
        hs.append(h)
    expected = {solvers.BogackiShampine: 3.0, solvers.Dopri5: 4.0}[solver_cls]
    slope = fitted_slope(hs, errs)
    assert slope > expected - 0.4, (slope, errs)


def test_adaptive_lands_on_ts_points():
    """Adaptive solvers never step across a point of ts; save_at='grid' returns them exactly."""
    p = LinearODE()
    x0 = _x0(p)
    ts = [0.0, 0.3, 0.31, 1.0]
    seen = []
    sol = solvers.integrate(p, x0, ts, solvers.Dopri5(rtol=1e-8, atol=1e-8), save_at="grid",
                            callback=lambda ev: seen.append(ev.t))
    for t in ts[1:]:
        assert t in seen
    exact = torch.stack([p.exact(x0, 0.0, t) for t in ts])
    torch.testing.assert_close(sol.ys, exact, rtol=1e-6, atol=1e-6)
    assert sol.ts.tolist() == ts


@pytest.mark.parametrize("solver", [solvers.RK4(), solvers.Dopri5(adaptive=False), solvers.Heun()], ids=repr)
def test_reverse_equals_forward_of_reversed_problem(solver):
    """Integrating f over decreasing ts is integrating s -> -f(x, -s) over -ts (bitwise, same arithmetic)."""
    p = TimeDependentODE()
    x0 = _x0(p)
    ts = solvers.grid_from_fn(lambda u: 1.0 - 0.8 * u ** 2, 12)
    back = solvers.integrate(p, x0, ts, solver, save_at="grid")
    fwd = solvers.integrate(solvers.time_reversed(p), x0, -ts, solver, save_at="grid")
    torch.testing.assert_close(back.ys, fwd.ys, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("per_sample", [False, True])
def test_forward_then_backward_returns(per_sample):
    """Integrating forward to t1 and back to t0 recovers x0 (within the tolerance)."""
    p = LogisticODE()
    x0 = _x0(p)
    solver = solvers.Dopri5(rtol=1e-9, atol=1e-9, per_sample=per_sample)
    x1 = solvers.integrate(p, x0, [0.0, 1.5], solver).x
    back = solvers.integrate(p, x1, [1.5, 0.0], solver)
    torch.testing.assert_close(back.x, x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(x1, p.exact(x0, 0.0, 1.5), rtol=1e-7, atol=1e-7)


def test_pi_controller_reduces_rejections():
    """The PI controller (beta > 0) rejects no more steps than the I controller on a problem whose
    step size must keep changing, at about the same cost."""
    p = TimeDependentODE(omega=8.0)
    x0 = _x0(p)
    pi = solvers.integrate(p, x0, [0.0, 4.0], solvers.Dopri5(rtol=1e-6, atol=1e-6))
    i = solvers.integrate(p, x0, [0.0, 4.0], solvers.Dopri5(rtol=1e-6, atol=1e-6,
                                                             controller=solvers.PIController(beta=0.0)))
    assert pi.n_rejected <= i.n_rejected
    assert pi.nfe <= 1.2 * i.nfe


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_follow_input(device, dtype):
    """States, saved outputs and the times given to the problem follow x0's device and dtype."""
    p = LinearODE()
    x0 = torch.randn(4, 2, dtype=dtype, device=device)
    seen = []

    def f(x, t):
        seen.append((t.shape, t.dtype, t.device.type))
        return p.vector_field(x, t)

    for solver in (solvers.RK4(), solvers.Dopri5(), solvers.Dopri5(per_sample=True)):
        sol = solvers.integrate(f, x0, solvers.uniform_grid(0, 1, 8), solver, save_at="grid")
        assert sol.x.dtype == dtype and sol.x.device.type == device
        assert sol.ys.shape == (9, 4, 2)
        tol = 1e-4 if dtype == torch.float32 else 1e-5
        torch.testing.assert_close(sol.x, p.exact(x0, 0.0, 1.0), rtol=tol * 10, atol=tol * 10)
    assert set(seen) == {((4,), dtype, device)}


def test_image_shaped_states():
    """States of any shape (B, C, H, W) work with every ODE solver; times broadcast per sample."""
    p = TimeDependentODE()
    x0 = torch.randn(3, 2, 4, 4, dtype=F64)
    for solver in FIXED[:4] + [solvers.Dopri5(rtol=1e-8, atol=1e-8, per_sample=True)]:
        sol = solvers.integrate(p, x0, solvers.uniform_grid(0, 1, 200), solver)
        torch.testing.assert_close(sol.x, p.exact(x0, 0.0, 1.0), rtol=0.05, atol=0.05)
