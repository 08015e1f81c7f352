"""Agreement with the reference backends: torchsde.sdeint and scipy.integrate.solve_ivp."""

import warnings

import numpy as np
import pytest
import torch

import solvers
from solvers import reference
from solvers.testing import GeometricBrownianMotion, LinearODE, LogisticODE, OrnsteinUhlenbeck, TimeDependentODE

F64 = torch.float64

GRIDS = {
    "forward": solvers.uniform_grid(0.0, 1.0, 16),
    "reverse": solvers.uniform_grid(1.0, 0.0, 16),
    "reverse-nonuniform": solvers.grid_from_fn(lambda u: 1.0 - u ** 2, 13),
}


class TimeDependentOU:
    """dx = (sin 4t - x) dt + (0.5 + t) dW: additive noise whose drift and diffusion depend on t,
    so that a wrong time change would show."""

    noise_type = "additive"

    def drift(self, x, t):
        return torch.sin(4 * t)[:, None] - x

    def diffusion(self, x, t):
        return (0.5 + t)[:, None].expand_as(x)


CASES = [
    ("euler", solvers.EulerMaruyama(), TimeDependentOU(), False),
    ("srk", solvers.SRA1(), TimeDependentOU(), True),
    ("heun", solvers.StochasticHeun(), TimeDependentOU(), False),
    ("euler", solvers.EulerMaruyama(), GeometricBrownianMotion(), False),
    ("euler", solvers.EulerMaruyama(), GeometricBrownianMotion(noise_type="scalar"), False),
    ("heun", solvers.StochasticHeun(), GeometricBrownianMotion(sde_type="stratonovich"), False),
]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("method,solver,problem,levy", CASES,
                         ids=[f"{m}-{type(p).__name__}-{getattr(p, 'noise_type', '')}" for m, _, p, _ in CASES])
def test_agrees_with_torchsde_on_the_same_path(grid, method, solver, problem, levy):
    """Our solver and torchsde's method, driven by one BrownianInterval (entropy-seeded), agree at
    every grid point to float64 round-off; reverse time goes to torchsde through s = -t."""
    ts = GRIDS[grid]
    x0 = 0.5 + torch.rand(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    bm, noise = reference.torchsde_brownian(x0, ts, entropy=1234, levy_area=levy,
                                            noise_type=getattr(problem, "noise_type", "diagonal"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no float32-time or out-of-interval warnings from torchsde
        theirs = reference.torchsde_solve(problem, x0, ts, bm=bm, method=method)
    ours = solvers.integrate(problem, x0, ts, solver, noise=noise, save_at="grid").ys
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_torchsde_path_is_reproducible_from_entropy():
    ts = GRIDS["reverse"]
    x0 = torch.zeros(4, 2, dtype=F64)
    runs = [reference.torchsde_solve(OrnsteinUhlenbeck(), x0, ts, bm=reference.torchsde_brownian(x0, ts, entropy=5)[0])
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("ts", [[0.0, 0.4, 1.5], [1.5, 0.2]], ids=["forward", "reverse"])
@pytest.mark.parametrize("problem", [LinearODE(), LogisticODE(r=3.0)], ids=repr)
def test_dopri5_agrees_with_scipy(problem, ts, per_sample):
    """Dopri5 and scipy's RK45 (the same Dormand-Prince pair), both at rtol = atol = 1e-8, agree
    with each other and with the exact solution within 1e-6 at the output times."""
    g = torch.Generator().manual_seed(1)
    x0 = (0.2 + 0.6 * torch.rand(5, 2, dtype=F64, generator=g)) if isinstance(problem, LogisticODE) \
        else torch.randn(5, 2, dtype=F64, generator=g)
    ref = reference.scipy_solve(problem, x0, ts, method="RK45", rtol=1e-8, atol=1e-8)
    ours = solvers.integrate(problem, x0, [ts[0], ts[-1]], solvers.Dopri5(rtol=1e-8, atol=1e-8, per_sample=per_sample),
                             save_at=ts)
    exact = torch.stack([problem.exact(x0, ts[0], t) for t in ts])
    torch.testing.assert_close(ours.ys, ref.ys, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.ys, exact, rtol=1e-6, atol=1e-6)
    assert ref.nfe > 0


def test_dopri5_with_i_controller_reproduces_scipy_step_sequence():
    """For one system (B = 1, where both error norms coincide) and beta = 0 (the integral
    controller scipy uses), our Dopri5 takes exactly scipy's RK45 steps: same evaluations, same
    result to round-off. This pins the tableau, error norm, starting step and controller."""
    p = TimeDependentODE(omega=8.0)
    x0 = torch.tensor([[1.0, 0.5]], dtype=F64)
    for tol in (1e-3, 1e-6, 1e-9):
        ref = reference.scipy_solve(p, x0, [0.0, 4.0], rtol=tol, atol=tol)
        ours = solvers.integrate(p, x0, [0.0, 4.0], solvers.Dopri5(rtol=tol, atol=tol,
                                                                    controller=solvers.PIController(beta=0.0)))
        assert ours.nfe == ref.nfe, tol
        torch.testing.assert_close(ours.x, ref.ys[-1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("problem,x0,t1", [
    (TimeDependentODE(omega=8.0), [[1.0, 0.5]], 4.0),
    (LogisticODE(r=3.0), [[0.1, 0.3, 0.6]], 3.0),
], ids=["oscillatory", "logistic"])
def test_dopri5_pi_costs_no_more_than_scipy_at_equal_accuracy(problem, x0, t1):
    """Work-precision over tolerances 1e-3..1e-10: at the accuracy our default (PI) Dopri5
    reaches, scipy's RK45 needs (log-log interpolated over its own sweep) at least as many
    evaluations, up to 5% (the PI controller trades a slightly smaller steady step for fewer
    rejections; the geometric mean ratio is reported by benchmarks/bench_solvers.py)."""
    x0 = torch.tensor(x0, dtype=F64)
    exact = problem.exact(x0, 0.0, t1)
    tols = [10 ** (-k / 2) for k in range(6, 21)]
    sc = [reference.scipy_solve(problem, x0, [0.0, t1], rtol=t, atol=t) for t in tols]
    sc_nfe = np.log([r.nfe for r in sc])
    sc_err = np.log([(r.ys[-1] - exact).abs().max().item() for r in sc])
    order = np.argsort(sc_err)
    ratios = []
    for t in tols:
        ours = solvers.integrate(problem, x0, [0.0, t1], solvers.Dopri5(rtol=t, atol=t))
        err = np.log((ours.x - exact).abs().max().item())
        if sc_err.min() <= err <= sc_err.max():
            ratios.append(ours.nfe / np.exp(np.interp(err, sc_err[order], sc_nfe[order])))
    assert len(ratios) >= 10
    assert np.exp(np.mean(np.log(ratios))) <= 1.05, ratios
