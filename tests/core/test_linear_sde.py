"""LinearSDE, RectifiedFlow and EDM: coefficients against closed forms, the log-SNR inverse,
marginals against simulation, and every sampler, the likelihood and guidance on them.

The generic contract of an SDE (moment equations, Euler-Maruyama limit, prior, reverse,
identities) runs on these SDEs through tests/core/conftest.py's SDE_FACTORIES; this file adds
what is particular to building an SDE from its marginal.
"""

import ast
import math
import pathlib

import pytest
import solvers
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde
from scoresde import (
    DDIM,
    EDM,
    SDE,
    VESDE,
    VPSDE,
    Ancestral,
    AnnealedLangevin,
    DPMSolverPP,
    EDMHeun,
    GaussianMixture,
    LangevinCorrector,
    LinearSDE,
    PredictorCorrector,
    RectifiedFlow,
    ReverseDiffusion,
    SubVPSDE,
    UniPC,
    classifier_guided_score,
    guided_score,
    log_likelihood,
)
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler
from scoresde.time_grids import KarrasGrid, UniformLogSNR

from .conftest import make_sde
from .forward import ForwardProblem

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _from_marginal(sde: SDE, **kw) -> LinearSDE:
    """The LinearSDE of another SDE's marginal (autograd derivatives, bisection inverse)."""
    return LinearSDE(lambda t: sde.marginal(t)[0], lambda t: sde.marginal(t)[1], T=sde.T, prior_std=sde.prior_std, **kw)


REFERENCES = ["vp", "vp-cosine", "vp-T2", "subvp", "subvp-cosine", "ve", "ve-small"]


@pytest.mark.parametrize("name", REFERENCES)
def test_coefficients_of_a_known_sde_from_its_marginal(name):
    """LinearSDE built from VP's, sub-VP's or VE's (alpha, sigma) has their drift, diffusion and log-SNR."""
    ref = make_sde(name)
    lin = _from_marginal(ref)
    t = torch.linspace(0.01, 1.0, 60) * ref.T
    torch.testing.assert_close(lin.drift_coef(t), ref.drift_coef(t), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lin.diffusion(t), ref.diffusion(t), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(lin.log_snr(t), ref.log_snr(t), rtol=1e-9, atol=1e-9)
    lam = ref.log_snr(t)
    torch.testing.assert_close(lin.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-12 * ref.T)
    x = torch.randn(60, 3)
    torch.testing.assert_close(lin.drift(x, t), ref.drift(x, t), rtol=1e-9, atol=1e-12)
    assert lin.prior_std == ref.prior_std


def test_rectified_flow_closed_forms():
    """alpha = 1 - t, sigma = t: f = -1/(1-t), g^2 = 2t/(1-t), lambda = 2 log((1-t)/t); and the generic derivation agrees."""
    rf = RectifiedFlow()
    assert rf.T == 0.999 and rf.prior_std == 1.0
    t = torch.linspace(0.001, 0.999, 101)
    a, s = rf.marginal(t)
    torch.testing.assert_close(a, 1 - t, rtol=0, atol=0)
    torch.testing.assert_close(s, t, rtol=0, atol=0)
    torch.testing.assert_close(rf.drift_coef(t), -1 / (1 - t), rtol=1e-12, atol=0)
    torch.testing.assert_close(rf.diffusion(t) ** 2, 2 * t / (1 - t), rtol=1e-12, atol=0)
    torch.testing.assert_close(rf.log_snr(t), 2 * torch.log((1 - t) / t), rtol=1e-12, atol=1e-12)
    generic = LinearSDE(lambda t: 1 - t, lambda t: t * 1.0, T=0.999, prior_std=1.0)
    for name in ("drift_coef", "diffusion", "log_snr"):
        torch.testing.assert_close(getattr(generic, name)(t), getattr(rf, name)(t), rtol=1e-10, atol=1e-12)
    lam = rf.log_snr(t)
    torch.testing.assert_close(generic.t_from_log_snr(lam), t, rtol=1e-10, atol=1e-15)
    # The probability-flow velocity of the exact score is the flow-matching target E[eps - x0 | x_t].
    mix = GaussianMixture.gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.7]))
    exact = mix.diffused(rf)
    x = exact.sample(7, 0.4, generator=torch.Generator().manual_seed(3))
    tb = torch.full((7,), 0.4)
    v = rf.reverse(exact.score, probability_flow=True).vector_field(x, tb)
    torch.testing.assert_close(v, exact.eps(x, tb) - exact.denoiser(x, tb), rtol=1e-10, atol=1e-10)


def test_edm_closed_forms():
    """alpha = 1, sigma = t: f = 0, g = sqrt(2t) (Karras et al. eq. 4 with s = 1), lambda = -2 log t, T = sigma_max."""
    sde = EDM()
    assert sde.T == 80.0 and sde.prior_std == 80.0 and sde.sigma_min == 0.002
    t = torch.exp(torch.linspace(math.log(0.002), math.log(80.0), 50))
    torch.testing.assert_close(sde.marginal(t)[1], t, rtol=0, atol=0)
    assert bool((sde.drift_coef(t) == 0).all())
    torch.testing.assert_close(sde.diffusion(t), torch.sqrt(2 * t), rtol=1e-14, atol=0)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-13, atol=0)
    generic = LinearSDE(torch.ones_like, lambda t: t * 1.0, T=80.0)
    assert generic.prior_std == 80.0  # sigma_T by default
    torch.testing.assert_close(generic.diffusion(t), sde.diffusion(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(generic.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-10, atol=0)
    # EDM's own grid: KarrasGrid(rho=7) from sigma_max to sigma_min (Karras et al. eq. 5).
    # EDM's 18 noise levels (then 0) are the grid's 17 steps from sigma_max to sigma_min.
    ts = KarrasGrid(rho=7.0)(sde, 17, sde.sigma_min)
    i = torch.arange(18.0)
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(ts.double(), ref, rtol=1e-12, atol=0)


TRIG = lambda: LinearSDE(  # noqa: E731
    lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), T=0.999, prior_std=1.0
)


@given(u=st.floats(0.0, 1.0), which=st.sampled_from(["trig", "rf-generic", "edm-generic"]))
def test_bisection_inverts_the_log_snr(u, which):
    sde = {
        "trig": TRIG,
        "rf-generic": lambda: LinearSDE(lambda t: 1 - t, lambda t: t * 1.0, T=0.999),
        "edm-generic": lambda: LinearSDE(torch.ones_like, lambda t: t * 1.0, T=80.0),
    }[which]()
    t = torch.tensor([u * sde.T])
    lam = sde.log_snr(t)
    back = sde.t_from_log_snr(lam)
    if math.isinf(lam.item()):
        assert back.item() == 0.0
    else:
        torch.testing.assert_close(back, t, rtol=1e-9, atol=1e-12 * sde.T)


def test_bisection_ends_dtype_and_nan():
    sde = TRIG()
    lam_T = sde.log_snr(sde.T).item()
    lam = torch.tensor([float("inf"), 50.0, lam_T - 3.0, float("nan"), 0.0], dtype=torch.float32)
    with pytest.raises(ValueError, match="log_snr: expected a log-SNR in"):
        sde.t_from_log_snr(lam)  # values on the host outside the SDE's range (and NaN) are refused
    # the bisection itself (under the base's check) clamps to [0, T] and passes NaN through
    t = type(sde).t_from_log_snr.__wrapped__(sde, lam)
    assert t.dtype == torch.float32
    assert t[0].item() == 0.0 and t[2].item() == pytest.approx(sde.T) and math.isnan(t[3].item())
    assert t[1].item() == pytest.approx(2 / math.pi * math.atan(math.exp(-25.0)), rel=1e-5)
    assert t[4].item() == pytest.approx(0.5, rel=1e-6)  # cos = sin at t = 1/2


def _simulate(sde, x0, t1, steps, n, seed):
    """Forward Euler-Maruyama paths (solvers.EulerMaruyama) from x0 (plus sigma_0 noise) to t1."""
    gen = torch.Generator().manual_seed(seed)
    _, s0 = sde.marginal(0.0)
    x = x0 + s0 * torch.randn(n, 1, generator=gen)
    ts = torch.linspace(0.0, t1, steps + 1)
    return solvers.integrate(ForwardProblem(sde), x, ts, solvers.EulerMaruyama(), noise=gen).x


@pytest.mark.parametrize("name, t1", [("trig", 0.9), ("rf", 0.9), ("edm", 3.0)])
def test_marginal_against_simulation(name, t1):
    """n = 20000 forward paths end at N(alpha x0, sigma^2): mean and variance within 4.5 standard errors
    plus Euler-Maruyama's bias, bounded by its exact first-order recursion on the same grid."""
    sde = {"trig": TRIG, "rf": RectifiedFlow, "edm": EDM}[name]()
    n, steps, x0 = 20000, 400, 1.3
    x = _simulate(sde, x0, t1, steps, n, seed=11)
    alpha, sigma = sde.marginal(t1)
    # Euler-Maruyama's exact moments on this grid (a deterministic recursion), for its bias
    ts = torch.linspace(0.0, t1, steps + 1)
    m, v = torch.tensor(x0), sde.marginal(0.0)[1] ** 2
    for a, b in zip(ts[:-1], ts[1:]):
        k = 1 + sde.drift_coef(a) * (b - a)
        m, v = k * m, k * k * v + sde.diffusion(a) ** 2 * (b - a)
    var = sigma.item() ** 2
    bias_m, bias_v = abs(m.item() - alpha.item() * x0), abs(v.item() - var)
    assert bias_m < 0.01 * (1 + abs(alpha.item() * x0)) and bias_v < 0.01 * var  # the step is fine enough
    assert abs(x.mean().item() - alpha.item() * x0) < 4.5 * math.sqrt(var / n) + bias_m
    assert abs(x.var().item() - var) < 4.5 * math.sqrt(2 / n) * var + bias_v


# ---------------------------------------------------------------------- samplers, likelihood, guidance
MEAN = torch.tensor([1.0, -1.0], dtype=torch.float64)
STD = torch.tensor([0.3, 0.6], dtype=torch.float64)
Z = 4.0

PROCESSES = {
    "rf": (RectifiedFlow, None),
    "edm": (lambda: EDM(sigma_max=20.0), 0.002),
    "trig": (TRIG, None),
}
# Every sampler exported by scoresde.samplers, with a step count that puts its discretisation
# error below the moment test's resolution (n = 4000).
SAMPLERS = [
    (ReverseSDESampler(), 300),
    (ProbabilityFlowSampler(), 100),
    (ProbabilityFlowSampler(solvers.Dopri5(rtol=1e-6, atol=1e-6)), None),
    (ReverseDiffusion(), 400),
    (Ancestral(), 400),
    (PredictorCorrector(corrector=LangevinCorrector(norms="noise")), 200),
    (DDIM(), 200),
    (DDIM(eta=1.0), 300),
    (EDMHeun(), 60),
    (DPMSolverPP(order=3), 40),
    (UniPC(order=2), 40),
]


@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize("sampler, steps", SAMPLERS, ids=repr)
def test_every_sampler_reproduces_a_gaussian(process, sampler, steps):
    """From the exact p_T, each sampler's samples at t_end have the exact marginal's mean and variance (z < 4)."""
    make, t_end = PROCESSES[process]
    sde = make()
    n = 4000
    exact = GaussianMixture.gaussian(MEAN, STD).diffused(sde)
    x_T = exact.sample(n, sde.T, generator=torch.Generator().manual_seed(0))
    # The Euler-Maruyama samplers step on the log-SNR grid: rectified flow's f = -1/(1-t) is stiff
    # near T, where that grid's steps are short. EDM's time is its noise level, so a grid uniform in
    # t (the samplers' usual default) leaves the last step from 20/steps to t_end: it runs on
    # Karras et al.'s grid, as in their paper.
    grid = None
    if isinstance(sampler, (ReverseSDESampler, ReverseDiffusion)):
        grid = UniformLogSNR()
    elif process == "edm":
        grid = KarrasGrid()
    x = scoresde.sample(sde, exact.score, sampler=sampler, steps=steps, x_init=x_T, generator=1, t_end=t_end, grid=grid)
    t_last = t_end if t_end is not None else scoresde.time_grids.default_t_end(sde)
    alpha, sigma = sde.marginal(t_last)
    mean, var = alpha * MEAN, alpha**2 * STD**2 + sigma**2
    z_mean = (x.mean(0) - mean) / (var / n).sqrt()
    z_var = (x.var(0) / var - 1) / math.sqrt(2 / (n - 1))
    assert z_mean.abs().max() < Z, z_mean
    assert z_var.abs().max() < Z, z_var


def test_annealed_langevin_on_edm():
    """NCSN's annealed Langevin dynamics runs on EDM's VE process (sigma = t > 0 at the grid's end)."""
    sde = EDM(sigma_max=5.0)
    exact = GaussianMixture.gaussian(MEAN, STD).diffused(sde)
    n = 4000
    x = scoresde.sample(sde, exact.score, (n, 2), AnnealedLangevin(n_steps_each=100, step_lr=2e-4), steps=20,
                        t_end=0.05, grid=UniformLogSNR(), generator=2)  # geometric levels, as NCSN's
    var = STD**2 + 0.05**2
    z_mean = (x.mean(0) - MEAN) / (var / n).sqrt()
    z_var = (x.var(0) / var - 1) / math.sqrt(2 / (n - 1))
    assert z_mean.abs().max() < Z, z_mean
    assert z_var.abs().max() < Z, z_var


@pytest.mark.parametrize("process", ["rf", "edm", "trig"])
def test_likelihood_matches_the_exact_log_density(process):
    make, _ = PROCESSES[process]
    sde = make()
    mix = GaussianMixture.ring(4, radius=2.0, std=0.4, dim=2)
    exact = mix.diffused(sde)
    x = mix.sample(16, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(sde, exact.score, x, prior_logp=lambda z: exact.log_prob(z, sde.T))
    err = (res.log_prob - exact.log_prob(x, res.t_eps)).abs() / 2
    assert err.max() < 0.01, f"max error {err.max().item():.4g} nats/dim"


@pytest.mark.parametrize("process", ["rf", "edm"])
def test_guidance_is_bayes_on_these_processes(process):
    """Classifier guidance at scale 1 with the exact noisy classifier is the exact conditional score, and CFG at
    scale 1 is the conditional score; sampling with it lands in the class's components."""
    make, t_end = PROCESSES[process]
    sde = make()
    ring = GaussianMixture.ring(4, radius=3.0, std=0.3, dim=2)
    mix = GaussianMixture(ring.means, ring.stds, labels=torch.tensor([0, 1, 0, 1]))
    exact = mix.diffused(sde)
    cond = exact.conditional(1)
    guided = classifier_guided_score(exact.score, lambda x, t: exact.class_log_prob(x, t, 1), 1.0)
    x = exact.sample(9, 0.3 * sde.T, generator=torch.Generator().manual_seed(4))
    t = torch.full((9,), 0.3 * sde.T)
    torch.testing.assert_close(guided(x, t), cond.score(x, t), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(guided_score(exact.score, cond.score, 1.0)(x, t), cond.score(x, t))
    samples = scoresde.sample(sde, guided_score(exact.score, cond.score, 3.0), (500, 2), DPMSolverPP(), steps=30,
                              generator=0, t_end=t_end)
    nearest = torch.cdist(samples, mix.means).argmin(1)
    assert bool((mix.labels[nearest] == 1).all())


def test_losses_run_unchanged():
    """DSMLoss on rectified flow: at the exact eps-predictor its value is the exact posterior variance term, with
    uniform times and with log-SNR importance sampling (which uses the inverse log-SNR)."""
    sde = RectifiedFlow()
    mix = GaussianMixture.gaussian(MEAN, STD)
    exact = mix.diffused(sde)
    model = scoresde.ScoreModel(lambda x, t: exact.eps(x, t), sde, prediction="eps")
    x0 = mix.sample(64, generator=torch.Generator().manual_seed(0))
    for importance in (False, True):
        loss = scoresde.DSMLoss(sde, importance_sampling=importance)
        value = loss(model, x0, generator=torch.Generator().manual_seed(1))
        assert value.ndim == 0 and math.isfinite(value.item()) and value.item() > 0
    # At a fixed time the eps-weighted loss with the exact predictor is E||eps - E[eps|x_t]||^2 / d:
    # for Gaussian data, Var(eps | x_t) = alpha^2 s^2 / (alpha^2 s^2 + sigma^2) per coordinate.
    t = 0.5
    a, s = sde.marginal(t)
    big = mix.sample(20000, generator=torch.Generator().manual_seed(2))
    value = scoresde.DSMLoss(sde, weighting="eps")(model, big, t=t, generator=torch.Generator().manual_seed(3))
    ref = (a**2 * STD**2 / (a**2 * STD**2 + s**2)).mean()
    assert abs(value.item() / ref.item() - 1) < 4 * math.sqrt(2 / 20000)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(alpha=lambda t: 1 - t, sigma=lambda t: t, T=1.0), ValueError, r"alpha: expected alpha\(t\) > 0 .* at t = 1.0"),
        (dict(alpha=lambda t: t - 0.5, sigma=lambda t: t), ValueError, r"alpha: .* at t = 0.0"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t - 0.25), ValueError, r"sigma: expected sigma\(t\) >= 0 .* at t = 0.0"),
        (dict(alpha=torch.ones_like, sigma=lambda t: torch.where(t > 0.5, 0 * t, t)), ValueError,
         r"sigma: expected sigma\(t\) > 0 for t > 0 .* at t = 0.5"),
        (dict(alpha=torch.ones_like, sigma=lambda t: 2 - t), ValueError,
         r"alpha, sigma: expected a strictly decreasing signal-to-noise ratio .* from t = 0.0"),
        (dict(alpha=torch.ones_like, sigma=lambda t: 1 + (t - 0.5) ** 2), ValueError,
         r"alpha, sigma: .* does not decrease from t = 0.0 "),
        (dict(alpha=lambda t: 1.0, sigma=lambda t: t), TypeError, r"alpha: expected a tensor shaped like t"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t.new_tensor(0.5)), TypeError, r"sigma: expected a tensor shaped"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t / (t - 0.5)), ValueError, r"sigma: expected finite values"),
        (dict(alpha=torch.ones_like, sigma="t"), TypeError, r"sigma: expected a tensor callable"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t, T=-1.0), ValueError, r"T: expected a finite number > 0"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t, dsigma_dt=lambda t: -torch.ones_like(t)), ValueError,
         r"dalpha_dt, dsigma_dt: expected derivatives that give g\(t\)\^2 .* >= 0"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t, log_snr=lambda t: -torch.log(t)), ValueError,
         r"log_snr: expected log\(alpha\^2 / sigma\^2\)"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t, t_from_log_snr=lambda lam: torch.exp(-lam)), ValueError,
         r"t_from_log_snr: expected the inverse"),
        (dict(alpha=torch.ones_like, sigma=lambda t: t, prior_std=0.0), ValueError, r"prior_std"),
    ],
)
def test_bad_input(kw, exc, match):
    with pytest.raises(exc, match=match):
        LinearSDE(**kw)


def test_bad_named_processes():
    with pytest.raises(ValueError, match=r"T: expected a horizon below 1"):
        RectifiedFlow(T=1.0)
    with pytest.raises(ValueError, match=r"sigma_min: expected a value below sigma_max"):
        EDM(sigma_max=1.0, sigma_min=2.0)


def test_named_processes_pickle():
    import pickle

    for sde in (RectifiedFlow(0.99), EDM(20.0)):
        back = pickle.loads(pickle.dumps(sde))
        assert back == sde
        torch.testing.assert_close(back.t_from_log_snr(back.log_snr(0.5)), torch.tensor(0.5))


def test_equality_and_repr():
    assert RectifiedFlow() == RectifiedFlow(0.999) and RectifiedFlow() != RectifiedFlow(0.9)
    assert EDM() == EDM(80.0) and repr(EDM()) == "EDM(sigma_max=80.0, sigma_min=0.002)"
    a, s = torch.ones_like, torch.clone
    assert LinearSDE(a, s) == LinearSDE(a, s) and LinearSDE(a, s) != LinearSDE(a, s, T=0.5)


# ---------------------------------------------------------------------- the import graph
def _imports(module: str) -> set[str]:
    """Every scoresde module that `module` imports, function-local imports included."""
    path = ROOT / "scoresde" / f"{module}.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_sde_module_is_purely_continuous():
    """sde.py imports neither the chains nor LinearSDE's module; the chains import sde.py, never the reverse."""
    assert not _imports("sde") & {"chains", "linear_sde", "schedules"}
    assert "sde" in _imports("chains") and "chains" not in _imports("linear_sde")
    assert not hasattr(SDE, "discretize") and not hasattr(LinearSDE, "discretize")
    assert VPSDE().discretize(100) == scoresde.DDPMSchedule.from_sde(VPSDE(), 100)
    assert SubVPSDE().discretize(100).to_sde() == SubVPSDE()
    assert VESDE().discretize(10) == scoresde.NCSNSchedule.from_sde(VESDE(), 10)
    with pytest.raises(TypeError, match="sde: expected a VPSDE or SubVPSDE"):
        scoresde.DDPMSchedule.from_sde(VESDE(), 10)
    with pytest.raises(TypeError, match="sde: expected a VESDE"):
        scoresde.NCSNSchedule.from_sde(RectifiedFlow(), 10)


@pytest.mark.cuda
def test_cuda_keeps_device():
    sde = TRIG()
    t = torch.rand(8, device="cuda") * 0.9
    assert sde.t_from_log_snr(sde.log_snr(t)).device.type == "cuda"
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-6, atol=1e-7)
    assert sde.diffusion(t).device.type == "cuda" and sde.drift_coef(t).device.type == "cuda"
    exact = GaussianMixture.gaussian(MEAN.cuda(), STD.cuda()).diffused(RectifiedFlow())
    x = scoresde.sample(RectifiedFlow(), exact.score, (64, 2), DPMSolverPP(), steps=10, device="cuda", generator=0)
    assert x.device.type == "cuda" and bool(torch.isfinite(x).all())


def test_dsm_with_the_flow_matching_weight_is_the_flow_matching_loss():
    """examples/rectified_flow.py's objective: a v-predicting model under DSMLoss with lambda(t) = t^2/(1-t)^2
    gives, per sample, exactly the flow-matching loss mean ||u_hat - (eps - x0)||^2 of its implied velocity
    u_hat = (v_hat - (1 - 2t) x_t) / ((1-t)^2 + t^2)."""
    sde = RectifiedFlow()
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(3, 3, generator=gen)
    net = lambda x, t: torch.tanh(x @ w) * (1 + t[:, None])  # noqa: E731  (any network)
    model = scoresde.ScoreModel(net, sde, prediction="v")
    x0 = torch.randn(16, 3, generator=gen)
    eps = torch.randn(16, 3, generator=gen)
    t = torch.rand(16, generator=gen) * 0.99 + 0.005
    loss = scoresde.DSMLoss(sde, weighting=lambda t: (t / (1 - t)) ** 2, reduction="none")
    value = loss(model, x0, t=t, noise=eps)
    xt = sde.perturb(x0, t, eps)
    tt = t[:, None]
    u_hat = (net(xt, t) - (1 - 2 * tt) * xt) / ((1 - tt) ** 2 + tt**2)
    torch.testing.assert_close(value, ((u_hat - (eps - x0)) ** 2).mean(1), rtol=1e-10, atol=1e-12)
