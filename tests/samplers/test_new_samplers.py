"""DPM-Solver singlestep, DEIS, iPNDM, DPM-Solver++ SDE, SA-Solver, the adaptive DPM-Solver and PNDM: against their peers on the same inputs,
measured orders on the exact probability flow, and their option checks.

diffusers' schedulers keep float32 tables; where the comparison should be to rounding, the
test replaces the scheduler's noise levels by the SDE's own in float64 after `set_timesteps`
(the scheduler's code is unchanged) and checks the float32 tables separately.
"""

import math

import pytest
import solvers
import torch

import scoresde
from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.time_grids import KarrasGrid, UniformLogSNR
from scoresde.samplers import (
    DEIS,
    IPNDM,
    DPMSolverAdaptive,
    DPMSolverPPSDE,
    DPMSolverSinglestep,
    PNDM,
    ProbabilityFlowSampler,
    SASolver,
)
from scoresde.samplers.singlestep import singlestep_orders

from ..peers import k_diffusion_sampling

N = 1000
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers under numpy 2


def _vp_problem():
    """The VP SDE, an exact 4-component mixture, the DDPM betas whose alphabar_k is alpha^2 at t_k = (k + 1)/N."""
    sde = VPSDE()
    exact = GaussianMixture.ring(4, radius=2.0, std=0.3, weights=[1.0, 2.0, 3.0, 4.0]).diffused(sde)
    t_k = torch.arange(1, N + 1, dtype=torch.float64) / N
    betas = scoresde.DDPMSchedule.from_alphas_cumprod(sde.marginal(t_k)[0] ** 2).betas.numpy()
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return sde, exact, betas, x_T


def _run_diffusers(sched, exact, x_T, times):
    """Drive a diffusers scheduler with the exact noise prediction at our time of each of its timesteps."""
    x = x_T.clone()
    for k, t in zip(sched.timesteps, times):
        x = sched.step(exact.eps(x, t.expand(x.shape[0])), k, x).prev_sample
    return x


# ---------------------------------------------------------------------- DPM-Solver singlestep
@pytest.mark.parametrize("K", [[999, 700, 400, 200, 80, 20, 0], [999, 800, 600, 450, 300, 200, 120, 60, 20, 5]],
                         ids=["7", "10"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_singlestep_is_diffusers_singlestep(K, order, solver_type):
    """The grid's N times then Tweedie = diffusers' N evaluations and its last step to sigma = 0, to rounding."""
    diffusers = pytest.importorskip("diffusers")
    sde, exact, betas, x_T = _vp_problem()
    grid = torch.tensor([(k + 1) / N for k in K], dtype=torch.float64)
    sched = diffusers.DPMSolverSinglestepScheduler(num_train_timesteps=N, trained_betas=betas, solver_order=order,
                                                   solver_type=solver_type, final_sigmas_type="zero")
    sched.set_timesteps(timesteps=K)
    assert sched.order_list == singlestep_orders(order, len(K))[:-1] + [1]
    tables32 = _run_diffusers(sched, exact, x_T, grid).double()
    sched.set_timesteps(timesteps=K)
    alpha, sigma = sde.marginal(grid)
    sched.sigmas = torch.cat([sigma / alpha, torch.zeros(1)])  # the same noise levels in float64
    ref = _run_diffusers(sched, exact, x_T, grid)
    ours = scoresde.sample(sde, exact.score, sampler=DPMSolverSinglestep(order=order, solver_type=solver_type),
                           grid=grid, x_init=x_T, denoise=True)
    assert (ours - ref).abs().max().item() < 1e-11
    assert (ours - tables32).abs().max().item() < 1e-4  # diffusers' own float32 tables
    assert (ours - x_T).abs().max().item() > 1.0  # the run moved


def test_singlestep_orders_rule():
    """diffusers' order lists: macro steps [1..order], a shortened last one, and divisibility without it."""
    assert singlestep_orders(3, 9) == [1, 2, 3, 1, 2, 3, 1, 2, 1]
    assert singlestep_orders(3, 7) == [1, 2, 3, 1, 2, 3, 1]
    assert singlestep_orders(3, 8) == [1, 2, 3, 1, 2, 3, 1, 2]
    assert singlestep_orders(2, 6) == [1, 2, 1, 2, 1, 1]
    assert singlestep_orders(2, 5) == [1, 2, 1, 2, 1]
    assert singlestep_orders(3, 6, lower_order_final=False) == [1, 2, 3, 1, 2, 3]
    with pytest.raises(ValueError, match="steps.*multiple of order=3, got 7"):
        singlestep_orders(3, 7, lower_order_final=False)


# ---------------------------------------------------------------------- DEIS
@pytest.mark.parametrize("n", [6, 20])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_is_diffusers_deis(n, order):
    """diffusers' DEISMultistepScheduler (log-rho) on its linspace timesteps ending at the chain's first level."""
    diffusers = pytest.importorskip("diffusers")
    sde, exact, betas, x_T = _vp_problem()
    sched = diffusers.DEISMultistepScheduler(num_train_timesteps=N, trained_betas=betas, solver_order=order)
    sched.set_timesteps(n)
    grid = torch.tensor([(int(k) + 1) / N for k in sched.timesteps] + [1 / N], dtype=torch.float64)
    tables32 = _run_diffusers(sched, exact, x_T, grid).double()
    sched.set_timesteps(n)
    alpha, sigma = sde.marginal(grid)
    sched.sigmas = sigma / alpha
    ref = _run_diffusers(sched, exact, x_T, grid)
    ours = scoresde.sample(sde, exact.score, sampler=DEIS(order=order), grid=grid, x_init=x_T, denoise=False)
    assert (ours - ref).abs().max().item() < 1e-10
    # diffusers' float32 run: its closed-form third-order coefficients are differences of terms of size
    # e^u u^2 that nearly cancel on short steps, so at 20 steps float32 keeps only ~3 digits (1.5e-3 measured)
    assert (ours - tables32).abs().max().item() < (1e-4 if n < 20 or order < 3 else 5e-3)
    if order > 1:  # a different method than DDIM
        ddim = scoresde.sample(sde, exact.score, sampler=DEIS(order=1), grid=grid, x_init=x_T, denoise=False)
        assert (ours - ddim).abs().max().item() > 1e-3


# ---------------------------------------------------------------------- iPNDM
@pytest.mark.parametrize("n", [3, 12])
def test_ipndm_is_diffusers_ipndm(n):
    """diffusers' IPNDMScheduler with its levels set to our VP grid (`trained_betas` are its sigmas) and fed
    the model output whose `ets` is our exact noise prediction."""
    diffusers = pytest.importorskip("diffusers")
    sde, exact, _, x_T = _vp_problem()
    grid = UniformLogSNR()(sde, n)
    alpha, sigma = sde.marginal(grid)
    sched = diffusers.IPNDMScheduler(trained_betas=sigma.tolist())
    sched.set_timesteps(n)
    sched.betas, sched.alphas = sigma, alpha  # its float32 tables, in float64
    x = x_T.clone()
    for k, tk in enumerate(sched.timesteps):
        eps = exact.eps(x, grid[k].expand(x.shape[0]))
        # ets = sigma x + alpha v = eps for v = (eps - sigma x) / alpha
        x = sched.step((eps - sigma[k] * x) / alpha[k], tk, x).prev_sample
    ours = scoresde.sample(sde, exact.score, sampler=IPNDM(), grid=grid, x_init=x_T, denoise=False)
    assert (ours - x).abs().max().item() < 1e-11
    assert (ours - x_T).abs().max().item() > 1.0


# ---------------------------------------------------------------------- PNDM
@pytest.mark.parametrize("n", [4, 10, 20])
def test_pndm_is_diffusers_pndm(n):
    """diffusers' PNDMScheduler with its pseudo Runge-Kutta start ("leading" timesteps, whose steps of N // n and
    half-steps are our grid and midpoints; the last step into alphabar = 1), its alphabar in float64: to rounding,
    with the same number of evaluations."""
    diffusers = pytest.importorskip("diffusers")
    sde, exact, betas, x_T = _vp_problem()
    sched = diffusers.PNDMScheduler(num_train_timesteps=N, trained_betas=betas, skip_prk_steps=False,
                                    set_alpha_to_one=True, timestep_spacing="leading", steps_offset=0)
    sched.set_timesteps(n)
    sched.alphas_cumprod = sde.marginal(torch.arange(1, N + 1, dtype=torch.float64) / N)[0] ** 2
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    times = torch.tensor([(int(k) + 1) / N for k in sched.timesteps], dtype=torch.float64)
    ref = _run_diffusers(sched, exact, x_T, times)
    grid = torch.tensor([(int(k) + 1) / N for k in sched._timesteps[::-1]] + [0.0], dtype=torch.float64)
    nfes = []
    ours = scoresde.sample(sde, exact.score, sampler=PNDM(), grid=grid, x_init=x_T, callback=lambda s: nfes.append(s.nfe))
    assert (ours - ref).abs().max().item() < 1e-11
    assert nfes[-1] == len(sched.timesteps) == PNDM().evaluations(n)


# ---------------------------------------------------------------------- DPM-Solver++ SDE
class _SameIncrements:
    """k-diffusion's noise_sampler(sigma, sigma_next) from the same Brownian increments as ours:
    its first call of a step is xi_1 over [sigma_s, sigma_i], its second xi_2 over [sigma_{i+1}, sigma_i]."""

    def __init__(self, shape, seed, independent):
        self.increment = solvers.GeneratorNoise(torch.Generator().manual_seed(seed)).bind(shape, torch.float64, "cpu")
        self.first, self.independent = None, independent

    def __call__(self, sigma, sigma_next):
        a, b = float(sigma), float(sigma_next)
        if self.first is None:
            self.first = (b, self.increment(a, b))
            return self.first[1] / math.sqrt(a - b)
        (mid, dw_1), self.first = self.first, None
        dw_2 = self.increment(mid, b)
        return dw_2 / math.sqrt(mid - b) if self.independent else (dw_1 + dw_2) / math.sqrt(a - b)


@pytest.mark.parametrize("make_sde", [VPSDE, lambda: VESDE(sigma_min=0.01, sigma_max=20.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("eta, noise", [(0.0, "brownian"), (1.0, "brownian"), (0.7, "brownian"), (1.0, "independent")])
def test_dpmpp_sde_is_k_diffusion(make_sde, eta, noise):
    """k-diffusion's sample_dpmpp_sde on sigma_hat = sigma/alpha (and 0), x_hat = x/alpha, the exact denoiser,
    the same Brownian increments: equal to rounding."""
    K = k_diffusion_sampling()
    sde = make_sde()
    exact = GaussianMixture.ring(4, radius=2.0, std=0.3, weights=[1.0, 2.0, 3.0, 4.0]).diffused(sde)
    grid = KarrasGrid(7.0)(sde, 8)
    alpha, sigma = sde.marginal(grid)
    sigmas = torch.cat([sigma / alpha, torch.zeros(1)])
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sde.prior_std

    def model(x_hat, s):
        t = sde.t_from_log_snr(-2 * torch.log(s[0])) if s[0] < sigmas[0] else grid[0]
        return exact.denoiser(sde.marginal(t)[0] * x_hat, t.expand(x_hat.shape[0]))

    ref = K.sample_dpmpp_sde(model, x_T / alpha[0], sigmas, eta=eta, disable=True,
                             noise_sampler=_SameIncrements(x_T.shape, 5, noise == "independent"))
    ours = scoresde.sample(sde, exact.score, sampler=DPMSolverPPSDE(eta=eta, noise=noise), grid=grid, x_init=x_T,
                           denoise=True, generator=torch.Generator().manual_seed(5))
    assert (ours - ref).abs().max().item() < 1e-11


def test_dpmpp_sde_noise_has_the_brownian_tree_law():
    """xi_1, xi_2 are standard normal with correlation sqrt((s_i - s_s)/(s_i - s_{i+1})), as increments of one path
    (k-diffusion's Brownian tree); "independent" gives none. 40,000 pairs: standard error of a correlation 0.005."""
    n = 40_000
    s_cur, s_mid, s_next = 2.0, 1.5, 0.5
    inc = solvers.GeneratorNoise(torch.Generator().manual_seed(1)).bind((n,), torch.float64, "cpu")
    for noise, rho in (("brownian", math.sqrt((s_cur - s_mid) / (s_cur - s_next))), ("independent", 0.0)):
        xi_1, xi_2 = DPMSolverPPSDE(noise=noise)._noises(inc, s_cur, s_mid, s_next)
        for xi in (xi_1, xi_2):
            assert abs(xi.mean().item()) < 4 / math.sqrt(n) and abs(xi.var().item() - 1) < 4 * math.sqrt(2 / n)
        corr = torch.corrcoef(torch.stack([xi_1, xi_2]))[0, 1].item()
        assert abs(corr - rho) < 4 * (1 - rho**2) / math.sqrt(n), (noise, corr, rho)


def test_dpmpp_sde_runs_on_a_brownian_tree():
    """A solvers.BrownianTree in sigma_hat = sigma/alpha (VP: up to 156 at t = 1) as the noise source (with x_init):
    the same path at any step size, so the run is reproducible and different from another tree's."""
    sde, exact, _, x_T = _vp_problem()
    run = lambda seed: scoresde.sample(sde, exact.score, sampler=DPMSolverPPSDE(), steps=6, x_init=x_T,  # noqa: E731
                                       generator=solvers.BrownianTree(0.0, 200.0, seed=seed), denoise=True)
    a, b = run(0), run(0)
    assert torch.equal(a, b) and bool(torch.isfinite(a).all())
    assert (a - run(1)).abs().max().item() > 1e-3


# ---------------------------------------------------------------------- SA-Solver
@pytest.mark.parametrize("n", [6, 20])
@pytest.mark.parametrize("orders", [(1, 1), (2, 2), (3, 3), (4, 4), (3, 1), (2, 4)], ids=str)
@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_sa_solver_is_diffusers_sa_solver(n, orders, tau):
    """diffusers' SASolverScheduler (data prediction) on its timesteps, with tau on t/T in [0.2, 0.8], the same
    generator for its noise: equal to rounding."""
    diffusers = pytest.importorskip("diffusers")
    sde, exact, betas, x_T = _vp_problem()
    P, C = orders
    sched = diffusers.SASolverScheduler(num_train_timesteps=N, trained_betas=betas, predictor_order=P, corrector_order=C,
                                        tau_func=lambda k: tau if 0.2 <= (int(k) + 1) / N <= 0.8 else 0.0)
    sched.set_timesteps(n)
    grid = torch.tensor([(int(k) + 1) / N for k in sched.timesteps] + [1 / N], dtype=torch.float64)
    alpha, sigma = sde.marginal(grid)
    sched.sigmas = sigma / alpha  # its float32 levels, in float64
    x, g = x_T.clone(), torch.Generator().manual_seed(4)
    for k, t in zip(sched.timesteps, grid):
        x = sched.step(exact.eps(x, t.expand(x.shape[0])), k, x, generator=g).prev_sample
    ours = scoresde.sample(sde, exact.score, sampler=SASolver(P, C, tau=tau), grid=grid, x_init=x_T,
                           generator=torch.Generator().manual_seed(4), denoise=False)
    assert (ours - x).abs().max().item() < 1e-10
    assert (ours - x_T).abs().max().item() > 1.0


def test_sa_solver_weights_integrate_polynomials_exactly():
    """c_k = int_{-h}^0 e^{au} l_k(u) du: sum_k c_k p(u_k) = int e^{au} p(u) du for p of degree < number of nodes."""
    from scipy import integrate

    from scoresde.samplers.sa_solver import exponential_lagrange_weights

    nodes, h, a = [-0.4, -0.9, -1.3, -2.0], 0.4, 1.7
    c = exponential_lagrange_weights(nodes, h, a)
    for p in (lambda u: 1.0 + 0 * u, lambda u: u, lambda u: 3 * u**2 - u, lambda u: u**3 + 2):
        exact = integrate.quad(lambda u: math.exp(a * u) * p(u), -h, 0.0, epsabs=1e-14, epsrel=1e-14)[0]
        assert abs(sum(ck * p(uk) for ck, uk in zip(c, nodes)) - exact) < 1e-12


# ---------------------------------------------------------------------- adaptive DPM-Solver
@pytest.mark.parametrize("make_sde", [VPSDE, SubVPSDE, lambda: VESDE(sigma_min=0.01, sigma_max=20.0)],
                         ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("tols", [{}, {"rtol": 0.01, "atol": 0.001}], ids=["default", "tight"])
def test_dpm_adaptive_is_k_diffusion(make_sde, order, tols):
    """k-diffusion's sample_dpm_adaptive from sigma_hat(T) to sigma_hat(t_end): the same accepted steps and result to
    rounding; our evaluations are k-diffusion's less one per rejected attempt (the start's prediction is kept)."""
    K = k_diffusion_sampling()
    sde = make_sde()
    exact = GaussianMixture.ring(4, radius=2.0, std=0.3, weights=[1.0, 2.0, 3.0, 4.0]).diffused(sde)
    ends = torch.tensor([sde.T, 1e-3], dtype=torch.float64)
    alpha, sigma = sde.marginal(ends)
    sigma_hat = sigma / alpha
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sde.prior_std

    def model(x_hat, s):
        t = sde.t_from_log_snr(-2 * torch.log(s[0]))
        return exact.denoiser(sde.marginal(t)[0] * x_hat, t.expand(x_hat.shape[0]))

    ref, info = K.sample_dpm_adaptive(model, x_T / alpha[0], sigma_hat[1].item(), sigma_hat[0].item(), order=order,
                                      disable=True, return_info=True, **tols)
    nfes = []
    ours = scoresde.sample(sde, exact.score, sampler=DPMSolverAdaptive(order=order, **tols), grid=ends, x_init=x_T,
                           callback=lambda step: nfes.append(step.nfe), denoise=False)
    assert (ours - alpha[1] * ref).abs().max().item() < 1e-10
    assert len(nfes) == info["n_accept"] and nfes[-1] == info["nfe"] - info["n_reject"]


def test_dpm_adaptive_tolerance_buys_accuracy():
    """Tighter tolerances: more evaluations and a smaller (max) distance to the exact flow (Dormand-Prince at 1e-11)."""
    sde, exact, _, x_T = _vp_problem()
    ref = scoresde.sample(sde, exact.score, sampler=ProbabilityFlowSampler(solvers.Dopri5(1e-11, 1e-11)), x_init=x_T)
    errs, nfes = [], []
    for rtol in (0.05, 0.005, 0.0005):
        n = []
        out = scoresde.sample(sde, exact.score, sampler=DPMSolverAdaptive(rtol=rtol, atol=rtol / 10), x_init=x_T,
                              callback=lambda step: n.append(step.nfe))
        errs.append((out - ref).abs().max().item())
        nfes.append(n[-1])
    assert nfes[0] < nfes[1] < nfes[2], nfes
    # each tenfold tighter tolerance: the error falls 5-8 times (measured 0.081, 0.016, 0.0019 with 39, 55, 106 NFE)
    assert errs[1] < errs[0] / 3 and errs[2] < errs[1] / 3, errs


def test_dpm_adaptive_refuses_steps_and_a_noise_free_end():
    sde, exact, _, x_T = _vp_problem()
    with pytest.raises(ValueError, match="steps: .* is adaptive and chooses its own steps"):
        scoresde.sample(sde, exact.score, sampler=DPMSolverAdaptive(), steps=10, x_init=x_T)
    with pytest.raises(ValueError, match="grid: DPMSolverAdaptive needs a finite log-SNR at both ends"):
        scoresde.sample(sde, exact.score, sampler=DPMSolverAdaptive(), grid=torch.tensor([1.0, 0.0]), x_init=x_T)


# ---------------------------------------------------------------------- orders on the exact flow
ORDER_SDES = {
    "vp": (lambda: VPSDE(), 1e-2),
    "subvp": (lambda: SubVPSDE(), 1e-2),
    "ve": (lambda: VESDE(sigma_min=0.01, sigma_max=10.0), 0.0),
}
# (sampler, steps, expected global order, band), on a uniform log-SNR grid
ORDERS = [
    (DPMSolverSinglestep(order=2, lower_order_final=False), (32, 64, 128), 2.0, 0.35),
    # 3S approaches its order slowly (fitted 2.5-2.75 over N = 48..192, 2.67-2.83 over 72..288)
    (DPMSolverSinglestep(order=3, lower_order_final=False), (72, 144, 288), 3.0, 0.4),
    (DPMSolverSinglestep(order=3, solver_type="heun", lower_order_final=False), (72, 144, 288), 3.0, 0.4),
    (DEIS(order=2), (32, 64, 128), 2.0, 0.35),
    (DEIS(order=3), (32, 64, 128), 3.0, 0.45),
    # constant Adams-Bashforth weights on steps that are not equal in rho (geometric here): order 2, not 4
    (IPNDM(), (32, 64, 128), 2.0, 0.35),
    (DPMSolverPPSDE(eta=0.0), (32, 64, 128), 2.0, 0.35),  # deterministic DPM-Solver++(2S)
    (SASolver(2, 2, tau=0.0), (32, 64, 128), 2.0, 0.35),
    (PNDM(), (32, 64, 128), 2.0, 0.35),  # its linear multistep has iPNDM's constant weights  # the corrector of order 2 keeps the predictor's order
]


@pytest.fixture(scope="module", params=sorted(ORDER_SDES))
def order_problem(request):
    """A smooth 2-D mixture, 64 prior draws and a Dormand-Prince solve of the same ODE at rtol = atol = 1e-11."""
    make, t_end = ORDER_SDES[request.param]
    sde = make()
    exact = GaussianMixture.ring(4, radius=2.0, std=0.5).diffused(sde)
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0))
    ref = scoresde.sample(sde, exact.score, sampler=ProbabilityFlowSampler(solvers.Dopri5(1e-11, 1e-11)), x_init=x_T,
                          t_end=t_end, denoise=False)
    return sde, exact, x_T, t_end, ref


@pytest.mark.parametrize("sampler, ns, order, band", ORDERS, ids=lambda v: repr(v) if isinstance(v, scoresde.samplers.Sampler) else "")
def test_convergence_order(order_problem, sampler, ns, order, band):
    sde, exact, x_T, t_end, ref = order_problem
    errs = []
    for n in ns:
        out = scoresde.sample(sde, exact.score, sampler=sampler, steps=n, x_init=x_T, t_end=t_end, grid=UniformLogSNR(), denoise=False)
        errs.append((out - ref).abs().max().item())
    slope = -torch.linalg.lstsq(torch.tensor([[1.0, math.log2(n)] for n in ns]),
                                torch.tensor([[math.log2(e)] for e in errs])).solution[1].item()
    assert order - band <= slope <= order + band, f"{sampler}: errors {errs}, fitted order {slope:.2f}"
    assert errs[-1] < 1e-2


def test_new_samplers_reach_zero_noise():
    """On a grid that ends at t = 0 (sigma = 0 for the VP SDE) each takes a finite last step into zero noise."""
    sde, exact, _, x_T = _vp_problem()
    grid = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    for sampler in (DPMSolverSinglestep(order=3), DEIS(), DPMSolverPPSDE(), SASolver(3, 3)):
        out = scoresde.sample(sde, exact.score, sampler=sampler, grid=grid, x_init=x_T, generator=0)
        assert bool(torch.isfinite(out).all()), sampler


# ---------------------------------------------------------------------- bad input
BAD = [
    (lambda: DPMSolverSinglestep(order=4), ValueError, r"order: expected one of \(1, 2, 3\), got 4"),
    (lambda: DPMSolverSinglestep(order=2.0), TypeError, "order"),
    (lambda: DPMSolverSinglestep(solver_type="rk"), ValueError, r"solver_type: expected one of \('midpoint', 'heun'\), got 'rk'"),
    (lambda: DPMSolverSinglestep(lower_order_final=1), TypeError, "lower_order_final: expected a bool, got 1"),
    (lambda: DEIS(order=0), ValueError, "order"),
    (lambda: DEIS(order=5), ValueError, r"order: expected one of \(1, 2, 3\), got 5"),
    (lambda: DEIS(lower_order_final="yes"), TypeError, "lower_order_final: expected a bool"),
    (lambda: IPNDM(order=5), ValueError, r"order: expected one of \(1, 2, 3, 4\), got 5"),
    (lambda: IPNDM(order="4"), TypeError, "order"),
    (lambda: DPMSolverPPSDE(eta=-0.5), ValueError, r"eta: expected a finite number >= 0, got -0.5"),
    (lambda: DPMSolverPPSDE(eta="1"), TypeError, "eta: expected a real number, got '1'"),
    (lambda: DPMSolverPPSDE(r=0.0), ValueError, r"r: expected a finite number in \(0, 1\], got 0.0"),
    (lambda: DPMSolverPPSDE(s_noise=float("nan")), ValueError, "s_noise"),
    (lambda: DPMSolverPPSDE(noise="tree"), ValueError, r"noise: expected one of \('brownian', 'independent'\), got 'tree'"),
    (lambda: SASolver(predictor_order=5), ValueError, r"predictor_order: expected one of \(1, 2, 3, 4\), got 5"),
    (lambda: SASolver(corrector_order=0), ValueError, "corrector_order"),
    (lambda: SASolver(tau=-1.0), ValueError, "tau: expected a finite number >= 0, got -1.0"),
    (lambda: SASolver(tau_interval=(0.8, 0.2)), ValueError, r"tau_interval: expected None or a pair \(lo, hi\)"),
    (lambda: SASolver(tau_interval=[0.2, 0.8]), ValueError, "tau_interval"),
    (lambda: SASolver(lower_order_final=None), TypeError, "lower_order_final: expected a bool, got None"),
    (lambda: DPMSolverAdaptive(order=1), ValueError, r"order: expected one of \(2, 3\), got 1"),
    (lambda: DPMSolverAdaptive(rtol=-0.1), ValueError, "rtol"),
    (lambda: DPMSolverAdaptive(rtol=0.0, atol=0.0), ValueError, "rtol, atol: at least one of them must be positive"),
    (lambda: DPMSolverAdaptive(h_init=0.0), ValueError, r"h_init: expected a finite number > 0, got 0.0"),
    (lambda: DPMSolverAdaptive(accept_safety="0.8"), TypeError, "accept_safety: expected a real number"),
    (lambda: DPMSolverAdaptive(max_steps=0), ValueError, "max_steps: expected an int >= 1, got 0"),
]


@pytest.mark.parametrize("make, error, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_options(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_singlestep_without_lower_order_final_needs_a_divisible_grid():
    sde, exact, _, x_T = _vp_problem()
    with pytest.raises(ValueError, match="steps: with lower_order_final=False the number of steps must be a multiple"):
        scoresde.sample(sde, exact.score, sampler=DPMSolverSinglestep(order=3, lower_order_final=False), steps=7,
                        x_init=x_T)


def test_exported_from_the_samplers_package():
    import scoresde.samplers as samplers

    for name in ("DPMSolverSinglestep", "DEIS", "IPNDM", "DPMSolverPPSDE", "SASolver", "DPMSolverAdaptive", "PNDM"):
        assert name in samplers.__all__ and isinstance(getattr(samplers, name), type)
        assert not hasattr(scoresde, name)  # the front door keeps the main path only
