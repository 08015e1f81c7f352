"""The integrate() API: solutions, saving, callbacks, grids, and errors on bad input."""

import math

import pytest
import torch

import solvers
from solvers.testing import GeometricBrownianMotion, LinearODE, OrnsteinUhlenbeck
from tests.conftest import devices

F64 = torch.float64
OU = OrnsteinUhlenbeck()
LIN = LinearODE()


def _x(b=3, d=2):
    return torch.ones(b, d, dtype=F64)


# -- solution object, saving, callbacks ----------------------------------------------------------

def test_solution_fields_fixed_step():
    sol = solvers.integrate(LIN, _x(), solvers.uniform_grid(0, 1, 10), solvers.RK4())
    assert sol.x.shape == (3, 2) and sol.ys.shape == (1, 3, 2)
    assert sol.ts.tolist() == [1.0] and sol.t == 1.0
    assert (sol.nfe, sol.n_steps, sol.n_accepted, sol.n_rejected) == (40, 10, 10, 0)
    assert torch.equal(sol.ys[0], sol.x)
    assert "RK4" in repr(sol)


def test_save_at_grid_and_points():
    ts = solvers.uniform_grid(0, 1, 8)
    sol = solvers.integrate(LIN, _x(), ts, solvers.Heun(), save_at="grid")
    assert sol.ys.shape == (9, 3, 2) and torch.equal(sol.ys[0], _x())
    torch.testing.assert_close(sol.ts, ts)
    part = solvers.integrate(LIN, _x(), ts, solvers.Heun(), save_at=[0.25, 0.75])
    torch.testing.assert_close(part.ys, sol.ys[[2, 6]])
    # float32 save times matching float64 grid points are accepted
    part32 = solvers.integrate(LIN, _x(), ts, solvers.Heun(), save_at=torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(part32.ys, part.ys)


def test_callback_and_progress():
    events = []
    solvers.integrate(OU, _x(), solvers.uniform_grid(1, 0, 5), solvers.EulerMaruyama(), callback=events.append,
                      progress=True)
    assert [e.step for e in events] == list(range(5))
    assert events[0].t_prev == 1.0 and events[-1].t == 0.0
    assert all(e.x.shape == (3, 2) for e in events)
    events = []
    sol = solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.Dopri5(), callback=events.append, progress=True)
    assert len(events) == sol.n_accepted and events[-1].t == 1.0
    events = []
    sol = solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.Dopri5(per_sample=True), callback=events.append)
    assert events[-1].t.shape == (3,) and torch.all(events[-1].t == 1.0)


def test_problem_adapters():
    """Plain callables, solvers.ODE/SDE wrappers and objects with both vector_field and drift."""
    f = lambda x, t: -x  # noqa: E731
    a = solvers.integrate(f, _x(), [0.0, 1.0], solvers.Dopri5(rtol=1e-8, atol=1e-8)).x
    b = solvers.integrate(solvers.ODE(f), _x(), [0.0, 1.0], solvers.Dopri5(rtol=1e-8, atol=1e-8)).x
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, _x() * math.exp(-1), rtol=1e-7, atol=1e-7)
    sde = solvers.SDE(lambda x, t: -x, lambda x, t: torch.zeros_like(x), noise_type="additive")
    torch.testing.assert_close(solvers.integrate(sde, _x(), solvers.uniform_grid(0, 1, 4), solvers.EulerMaruyama()).x,
                               _x() * 0.75 ** 4)

    class Both:  # like scoresde's ProbabilityFlowODE: ODE solvers use vector_field
        def vector_field(self, x, t):
            return -x

        drift = vector_field

        def diffusion(self, x, t):
            return torch.zeros_like(x)

    torch.testing.assert_close(solvers.integrate(Both(), _x(), solvers.uniform_grid(0, 1, 4), solvers.Euler()).x,
                               _x() * 0.75 ** 4)
    solvers.integrate(Both(), _x(), solvers.uniform_grid(0, 1, 4), solvers.EulerMaruyama())


def test_solver_attributes():
    assert solvers.EulerMaruyama.strong_order["diagonal"] == 0.5 and solvers.SRA1.strong_order["additive"] == 1.5
    assert solvers.Dopri5.order == 5 and solvers.Dopri5.error_order == 4 and solvers.Dopri5.fsal
    assert solvers.RK4.evals_per_step == 4 and solvers.SRA1.noise_types == ("additive",)
    assert solvers.Dopri5().adaptive and not solvers.Dopri5(adaptive=False).adaptive and not solvers.RK4().adaptive


def test_custom_tableau_is_a_few_lines():
    class Ralston(solvers.ExplicitRK):
        order = 2.0
        tableau = solvers.ButcherTableau(c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(0.25, 0.75))

    sol = solvers.integrate(LIN, _x(), solvers.uniform_grid(0, 1, 200), Ralston())
    torch.testing.assert_close(sol.x, LIN.exact(_x(), 0, 1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="row a\\[1\\]"):
        solvers.ButcherTableau(c=(0.0, 0.5), a=((), (0.4,)), b=(0.0, 1.0))


# -- grids ---------------------------------------------------------------------------------------

def test_grids():
    g = solvers.uniform_grid(1.0, 0.0, 4)
    assert g.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0] and g.dtype == F64
    rho, smin, smax = 7.0, 0.002, 80.0
    karras = solvers.grid_from_fn(lambda u: (smax ** (1 / rho) + u * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho, 18)
    assert karras.shape == (19,) and math.isclose(karras[0].item(), smax) and math.isclose(karras[-1].item(), smin)
    elementwise = solvers.grid_from_fn(lambda u: math.exp(-u), 5)  # Python floats work too
    torch.testing.assert_close(elementwise, torch.exp(-torch.linspace(0, 1, 6, dtype=F64)))
    with pytest.raises(ValueError, match="strictly monotone"):
        solvers.grid_from_fn(lambda u: torch.sin(6 * u), 10)
    with pytest.raises(ValueError, match="n: expected an int >= 1, got 0"):
        solvers.uniform_grid(0, 1, 0)
    with pytest.raises(ValueError, match="t1"):
        solvers.uniform_grid(1.0, 1.0, 4)


# -- errors on bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("ts,match", [
    ([0.0, 0.5, 0.4, 1.0], r"ts: expected strictly monotone times \(increasing.*ts\[1\]=0\.5 followed by ts\[2\]=0\.4"),
    ([1.0, 0.5, 0.5], r"ts\[1\]=0\.5 followed by ts\[2\]=0\.5"),
    ([0.0], "at least 2"),
    ([[0.0, 1.0]], "1-D"),
    ([0.0, float("nan")], "finite"),
    ("abc", "ts"),
])
def test_bad_ts(ts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        solvers.integrate(LIN, _x(), ts, solvers.RK4())


@pytest.mark.parametrize("kwargs,match", [
    (dict(rtol=0.0), "rtol: expected a finite number > 0, got 0.0"),
    (dict(atol=-1e-6), "atol: expected a finite number > 0, got -1e-06"),
    (dict(rtol=float("nan")), "rtol: expected a finite number"),
    (dict(per_sample=1), "per_sample"),
    (dict(controller="pi"), "controller"),
])
def test_bad_tolerances(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        solvers.Dopri5(**kwargs)
    with pytest.raises(ValueError, match="factor_min"):
        solvers.PIController(factor_min=2.0)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"vector_field\(x, t\) returned shape \(3, 1\); expected x's shape \(3, 2\)"):
        solvers.integrate(lambda x, t: x[:, :1], _x(), [0.0, 1.0], solvers.RK4())
    with pytest.raises(ValueError, match=r"drift\(x, t\) returned shape"):
        solvers.integrate(solvers.SDE(lambda x, t: x.sum(1), lambda x, t: x), _x(), [0.0, 1.0], solvers.EulerMaruyama())
    with pytest.raises(ValueError, match=r"diffusion\(x, t\) returned shape \(3, 5\), which does not broadcast"):
        solvers.integrate(solvers.SDE(lambda x, t: x, lambda x, t: torch.ones(3, 5)), _x(), [0.0, 1.0],
                          solvers.EulerMaruyama())
    with pytest.raises(TypeError, match="must return a tensor"):
        solvers.integrate(lambda x, t: 1.0, _x(), [0.0, 1.0], solvers.Dopri5())
    with pytest.raises(ValueError, match="per-sample seeds"):
        solvers.integrate(OU, _x(), [0.0, 1.0], solvers.EulerMaruyama(), noise=solvers.SeededNoise([1, 2]))


@pytest.mark.parametrize("solver,where", [
    (solvers.Euler(), "0.6"),  # its first evaluation past 0.5 is the step starting at 0.6
    (solvers.RK4(), "0.5"),  # the step from 0.5 evaluates at 0.55
    (solvers.Dopri5(), "0.5"),  # adaptive: steps shrink onto 0.5, then it stops
    (solvers.Dopri5(per_sample=True), "0.5"),
    (solvers.BogackiShampine(), "0.5"),
], ids=lambda v: repr(v) if isinstance(v, solvers.AbstractSolver) else v)
def test_nan_from_vector_field_names_the_time(solver, where):
    """A vector field that turns NaN for t > 0.5 stops the run with an error naming the time."""
    def f(x, t):
        return torch.where((t > 0.5)[:, None], torch.full_like(x, float("nan")), -x)

    with pytest.raises(solvers.NonFiniteError, match=rf"at t={where}\b"):
        solvers.integrate(f, _x(), solvers.uniform_grid(0, 1, 10), solver)
    with pytest.raises(ValueError):  # NonFiniteError is a ValueError
        solvers.integrate(f, _x(), solvers.uniform_grid(0, 1, 10), solver)


def test_nan_from_drift_names_the_time():
    sde = solvers.SDE(lambda x, t: torch.where((t < 0.35)[:, None], torch.full_like(x, float("inf")), -x),
                      lambda x, t: torch.ones_like(x), noise_type="additive")
    with pytest.raises(solvers.NonFiniteError, match=r"step 7, from t=0\.3 to t=0\.2.*drift or diffusion"):
        solvers.integrate(sde, _x(), solvers.uniform_grid(1, 0, 10), solvers.EulerMaruyama())
    # check_finite=False lets it through
    out = solvers.integrate(sde, _x(), solvers.uniform_grid(1, 0, 10), solvers.EulerMaruyama(), check_finite=False)
    assert not torch.isfinite(out.x).all()


@pytest.mark.parametrize("make_noise", [
    lambda: None,  # torch's global generator, snapshotted and replayed
    lambda: torch.Generator().manual_seed(3),
    lambda: solvers.SeededNoise(3),
    lambda: solvers.BrownianTree(0.0, 1.0, seed=3),
], ids=["global", "generator", "seeded", "tree"])
def test_random_blow_up_is_located_by_replay(make_noise):
    """A blow-up that depends on the noise path (drift NaN once |x| > 2) is located at the same step
    by the default end-of-run check (replayed with the same noise) as by per-step recording."""
    sde = solvers.SDE(lambda x, t: torch.where(x.abs() > 2, torch.full_like(x, float("nan")), -0.1 * x),
                      lambda x, t: torch.ones_like(x), noise_type="additive")
    x0 = torch.zeros(16, 4, dtype=F64)
    ts = solvers.uniform_grid(0, 1, 100)
    messages = []
    for mode in (True, "step"):
        torch.manual_seed(0)
        with pytest.raises(solvers.NonFiniteError) as info:
            solvers.integrate(sde, x0, ts, solvers.EulerMaruyama(), noise=make_noise(), check_finite=mode)
        messages.append(str(info.value))
    assert "in step" in messages[0] and messages[0] == messages[1]


def test_unreplayable_noise_still_reports():
    """A noise source that cannot replay: the error says the final state is non-finite."""
    from .helpers import RecordingNoise

    sde = solvers.SDE(lambda x, t: torch.where(x.abs() > 2, torch.full_like(x, float("nan")), -0.1 * x),
                      lambda x, t: torch.ones_like(x), noise_type="additive")
    with pytest.raises(solvers.NonFiniteError, match="state at t=1 is non-finite.*check_finite='step'"):
        solvers.integrate(sde, torch.zeros(16, 4), solvers.uniform_grid(0, 1, 100), solvers.EulerMaruyama(),
                          noise=RecordingNoise(solvers.GeneratorNoise(torch.Generator().manual_seed(0))))
    with pytest.raises(ValueError, match="check_finite: expected True, False or 'step'"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.RK4(), check_finite="yes")


def test_nan_at_initial_time_and_max_steps():
    with pytest.raises(solvers.NonFiniteError, match="initial time t=0"):
        solvers.integrate(lambda x, t: x * float("nan"), _x(), [0.0, 1.0], solvers.Dopri5())
    with pytest.raises(solvers.MaxStepsError, match="max_steps=5"):
        solvers.integrate(LIN, _x(), [0.0, 10.0], solvers.Dopri5(rtol=1e-10, atol=1e-10), max_steps=5)
    with pytest.raises(solvers.MaxStepsError, match="max_steps=5"):
        solvers.integrate(LIN, _x(), [0.0, 10.0], solvers.Dopri5(rtol=1e-10, atol=1e-10, per_sample=True), max_steps=5)


@pytest.mark.parametrize("solver,problem,match", [
    (solvers.SRA1(), GeometricBrownianMotion(), r"solver SRA1\(\) supports noise_type in \('additive',\), but problem "
                                                r"GeometricBrownianMotion.* has noise_type='diagonal'"),
    (solvers.StochasticHeun(), GeometricBrownianMotion(), r"StochasticHeun\(\) integrates stratonovich SDEs, but problem "
                                                          r"GeometricBrownianMotion.*sde_type='ito'"),
    (solvers.EulerMaruyama(), GeometricBrownianMotion(sde_type="stratonovich"), r"EulerMaruyama\(\) integrates ito"),
    (solvers.RK4(), OU, r"RK4\(\) is an ODE solver, but problem OrnsteinUhlenbeck.* is an SDE"),
    (solvers.EulerMaruyama(), LIN, r"EulerMaruyama\(\) is an SDE solver, but problem LinearODE\(\) is an ODE"),
    (solvers.EulerMaruyama(), solvers.SDE(lambda x, t: x, lambda x, t: x, noise_type="diagonal"), None),
])
def test_solver_problem_compatibility_names_both(solver, problem, match):
    if match is None:
        solvers.integrate(problem, _x(), [0.0, 0.1], solver)
        return
    with pytest.raises((ValueError, TypeError), match=match):
        solvers.integrate(problem, _x(), [0.0, 1.0], solver)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match=r"solver: pass an instance, e.g. solver=RK4\(\)"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.RK4)
    with pytest.raises(TypeError, match="solver: expected a solver instance"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], "rk4")
    with pytest.raises(TypeError, match="x0: expected a torch.Tensor"):
        solvers.integrate(LIN, [[1.0, 2.0]], [0.0, 1.0], solvers.RK4())
    with pytest.raises(TypeError, match="x0: expected a floating-point tensor, got dtype torch.int64"):
        solvers.integrate(LIN, torch.ones(2, 2, dtype=torch.long), [0.0, 1.0], solvers.RK4())
    with pytest.raises(ValueError, match="noise: RK4\\(\\) is an ODE solver"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.RK4(), noise=solvers.SeededNoise(0))
    with pytest.raises(TypeError, match="noise: expected None, a torch.Generator or a NoiseSource"):
        solvers.integrate(OU, _x(), [0.0, 1.0], solvers.EulerMaruyama(), noise=42)
    with pytest.raises(ValueError, match="dt0: only adaptive solvers use it"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.RK4(), dt0=0.1)
    with pytest.raises(ValueError, match="save_at: fixed-step solvers save only at points of ts; t=0.33"):
        solvers.integrate(LIN, _x(), solvers.uniform_grid(0, 1, 4), solvers.RK4(), save_at=[0.33])
    with pytest.raises(ValueError, match="save_at: times must lie in the integration span"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.Dopri5(), save_at=[0.5, 2.0])
    with pytest.raises(ValueError, match="save_at: times must run in the integration direction"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.Dopri5(), save_at=[0.6, 0.5])
    with pytest.raises(ValueError, match=r"the BrownianTree spans \[0.0, 1.0\], got a query at t=2.0"):
        solvers.integrate(OU, _x(), [0.0, 2.0], solvers.EulerMaruyama(), noise=solvers.BrownianTree(0, 1))
    with pytest.raises(ValueError, match="levy_area=True"):
        solvers.integrate(OU, _x(), [0.0, 1.0], solvers.SRA1(), noise=solvers.BrownianTree(0, 1))
    with pytest.raises(TypeError, match="seed"):
        solvers.SeededNoise(1.5)
    with pytest.raises(TypeError, match="callback"):
        solvers.integrate(LIN, _x(), [0.0, 1.0], solvers.RK4(), callback=3)


@pytest.mark.cuda
def test_generator_on_wrong_device():
    with pytest.raises(ValueError, match="generator: it lives on cpu but the state is on cuda"):
        solvers.integrate(OU, _x().cuda(), [0.0, 1.0], solvers.EulerMaruyama(), noise=torch.Generator())


@pytest.mark.parametrize("device", devices())
def test_half_precision_states(device):
    """bfloat16 states integrate (times passed in the state's dtype) and the finiteness check works."""
    x0 = torch.ones(4, 8, dtype=torch.bfloat16, device=device)
    sol = solvers.integrate(OU, x0, solvers.uniform_grid(0, 1, 10), solvers.EulerMaruyama(),
                            noise=solvers.SeededNoise(0))
    assert sol.x.dtype == torch.bfloat16 and torch.isfinite(sol.x).all()
