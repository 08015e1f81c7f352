"""Every recipe of the porting guide (docs/porting.md) against its peer, on identical inputs.

Where the peer is packaged (k-diffusion, diffusers) the test runs the peer's own code and
skips cleanly without it; score_sde_pytorch and EDM are not packaged, so their samplers are
written out here line by line from the published code (`sampling.py` / `sde_lib.py` of
yang-song/score_sde_pytorch, `generate.py` of NVlabs/edm). All runs are in float64 on an exact
Gaussian-mixture denoiser; agreement is to rounding, or to the peer's float32 tables.
"""

import math

import numpy as np
import pytest
import torch

import scoresde
from scoresde import (
    DDIM,
    LMS,
    Ancestral,
    DPMSolverPP,
    EDMHeun,
    GaussianMixture,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    UniPC,
    VESDE,
    VPSDE,
)
from scoresde.time_grids import KarrasGrid
from scoresde.samplers.lms import lms_coefficients
from tests.peers import k_diffusion_sampling

from ..conftest import devices

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers under numpy 2

MIX = GaussianMixture.ring(4, radius=2.0, std=0.3, weights=[1.0, 2.0, 3.0, 4.0])
B = 256


def _denoiser(x, sigma):
    """k-diffusion's / EDM's model: the exact D(x; sigma) of the mixture plus N(0, sigma^2 I)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
    return MIX.posterior_mean(x, 1.0, sigma)


def _noise(seed=0, scale=1.0):
    return torch.randn(B, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _karras_ve(n, sigma_min=0.002, sigma_max=80.0):
    """EDM's VE SDE and its n noise levels (float64), then k-diffusion's grid: the levels and 0."""
    sde = VESDE(sigma_min, sigma_max)
    ts = KarrasGrid(7.0)(sde, n - 1, t_end=0.0)
    sigmas = torch.cat([sde.marginal(ts)[1], torch.zeros(1, dtype=torch.float64)])
    return sde, ts, sigmas


# ---------------------------------------------------------------------- k-diffusion
def test_karras_grid_is_k_diffusions_to_its_float32_rounding():
    K = k_diffusion_sampling()
    _, _, sigmas = _karras_ve(12)
    ref = K.get_sigmas_karras(12, 0.002, 80.0, rho=7.0).double()
    assert torch.allclose(sigmas, ref, rtol=1e-6, atol=0)


def test_k_diffusion_sigma_grids_are_our_time_grids():
    """get_sigmas_exponential on VE is UniformLogSNR; get_sigmas_vp is UniformTime on the VP SDE (sigma / alpha),
    to k-diffusion's float32 rounding; get_sigmas_polyexponential(rho=1) is the exponential grid."""
    K = k_diffusion_sampling()
    n = 12
    ve = VESDE(0.002, 80.0)
    ours = ve.marginal(scoresde.time_grids.UniformLogSNR()(ve, n - 1, t_end=0.0))[1]
    assert torch.allclose(K.get_sigmas_exponential(n, 0.002, 80.0).double()[:-1], ours, rtol=1e-5, atol=0)
    assert torch.allclose(K.get_sigmas_polyexponential(n, 0.002, 80.0, rho=1.0).double()[:-1], ours, rtol=1e-5, atol=0)
    vp = VPSDE(0.1, 20.0)
    alpha, sigma = vp.marginal(scoresde.time_grids.UniformTime()(vp, n - 1, t_end=1e-3))
    ref = K.get_sigmas_vp(n, beta_d=19.9, beta_min=0.1, eps_s=1e-3).double()
    assert ref[-1] == 0 and torch.allclose(ref[:-1], sigma / alpha, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["sample_euler", "sample_euler_ancestral", "sample_heun", "sample_dpmpp_2m",
                                  "sample_lms"])
def test_k_diffusion_samplers_on_its_karras_grid(name):
    """VE SDE, Karras grid from 80 to 0.002, then k-diffusion's last step to sigma = 0. k-diffusion draws its noise
    from torch's global generator (`randn_like`), as `generator=None`."""
    K = k_diffusion_sampling()
    n = 10
    sde, ts, sigmas = _karras_ve(n)
    x_T = _noise(scale=80.0)
    torch.manual_seed(11)
    ref = getattr(K, name)(_denoiser, x_T.clone(), sigmas, disable=True)
    score = MIX.diffused(sde).score
    recipe = {
        "sample_euler": dict(sampler=DDIM(), denoise=True),
        "sample_euler_ancestral": dict(sampler=DDIM(eta=1.0), denoise=True),
        "sample_heun": dict(sampler=EDMHeun(), denoise=True),
        "sample_dpmpp_2m": dict(sampler=DPMSolverPP(order=2, lower_order_final=False), denoise=True),
        "sample_lms": dict(sampler=LMS(to_zero=True)),
    }[name]
    torch.manual_seed(11)
    ours = scoresde.sample(sde, score, grid=ts, x_init=x_T, **recipe)
    assert (ours - ref).abs().max().item() < 1e-12 * max(1.0, ref.abs().max().item())


def test_k_diffusion_lms_on_the_vp_sde_in_the_scaled_variable():
    """k-diffusion on x / alpha with sigma_hat = sigma / alpha is our LMS on the VP SDE; its sigma = 0 is t = 0."""
    K = k_diffusion_sampling()
    sde = VPSDE()
    ts = torch.cat([KarrasGrid(7.0)(sde, 11, t_end=1e-3), torch.zeros(1, dtype=torch.float64)])
    alpha, sigma = sde.marginal(ts)
    x_T = _noise()
    ref = K.sample_lms(_denoiser, x_T / alpha[0], sigma / alpha, disable=True)
    ours = scoresde.sample(sde, MIX.diffused(sde).score, sampler=LMS(), grid=ts, x_init=x_T)
    assert (ours - ref).abs().max().item() < 1e-12


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_coefficients_are_k_diffusions_quadratures(order):
    K = k_diffusion_sampling()
    _, _, sigmas = _karras_ve(9)
    s = sigmas.tolist()
    for i in range(order - 1, len(s) - 1):
        ours = lms_coefficients(s, i, order)
        ref = [K.linear_multistep_coeff(order, np.array(s), i, j) for j in range(order)]
        assert np.allclose(ours, ref, rtol=1e-12, atol=1e-12 * abs(s[i] - s[i + 1]))


def test_edm_per_level_churn_is_k_diffusions_sample_heun_with_s_churn():
    """k-diffusion's `sample_heun(s_churn=...)` draws from torch's global generator, as `generator=None`."""
    K = k_diffusion_sampling()
    sde, ts, sigmas = _karras_ve(10)
    x_T = _noise(scale=80.0)
    kw = dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)
    torch.manual_seed(7)
    ref = K.sample_heun(_denoiser, x_T.clone(), sigmas, disable=True, **kw)
    torch.manual_seed(7)
    sampler = EDMHeun(churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003, churn_per="level", to_zero=True)
    ours = scoresde.sample(sde, MIX.diffused(sde).score, sampler=sampler, grid=ts, x_init=x_T)
    assert (ours - ref).abs().max().item() < 1e-12 * ref.abs().max().item()


# ---------------------------------------------------------------------- EDM (NVlabs/edm, generate.py)
def _edm_sampler(net, latents, randn, num_steps, sigma_min, sigma_max, rho, S_churn, S_min, S_max, S_noise):
    """`edm_sampler` of NVlabs/edm's generate.py, written out (float64, round_sigma the identity)."""
    step_indices = torch.arange(num_steps, dtype=torch.float64)
    t_steps = (sigma_max ** (1 / rho) + step_indices / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t_steps = torch.cat([t_steps, torch.zeros_like(t_steps[:1])])  # t_N = 0
    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        # Increase noise temporarily.
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * S_noise * randn(x_cur)
        # Euler step.
        denoised = net(x_hat, t_hat)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        # Apply 2nd order correction.
        if i < num_steps - 1:
            denoised = net(x_next, t_next)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


@pytest.mark.parametrize("churn, s_min, s_max, s_noise", [(40.0, 0.05, 50.0, 1.003), (40.0, 0.05, math.inf, 1.003),
                                                          (2.0, 0.0, math.inf, 1.0)])
def test_edm_sampler_is_edm_heun_per_level_to_zero(churn, s_min, s_max, s_noise):
    """EDM's ImageNet-64 churn (S_churn 40, S_min 0.05, S_max 50, S_noise 1.003); S_max = inf churns sigma_max
    too (sigma+ uncapped); a small S_churn with S_min = 0 churns every level, the last one included."""
    n = 12
    sde, ts, _ = _karras_ve(n)
    latents = _noise(seed=1)
    gen = torch.Generator().manual_seed(3)
    ref = _edm_sampler(_denoiser, latents, lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype), n,
                       0.002, 80.0, 7.0, churn, s_min, s_max, s_noise)
    kw = dict(churn=churn, s_tmin=s_min, s_tmax=s_max, s_noise=s_noise)
    run = lambda sampler, **more: scoresde.sample(  # noqa: E731
        sde, MIX.diffused(sde).score, sampler=sampler, grid=ts, x_init=80.0 * latents,
        generator=torch.Generator().manual_seed(3), **more)
    ours = run(EDMHeun(**kw, churn_per="level", to_zero=True))
    assert (ours - ref).abs().max().item() < 1e-12 * ref.abs().max().item()
    # per grid step (the default) with the final denoising: the same only where gamma saturates at sqrt(2) - 1
    # at every churned level, none is churned past sigma_T, and the last level is not churned (the first case)
    other = run(EDMHeun(**kw), denoise=True)
    if s_max == 50.0:
        assert (other - ref).abs().max().item() < 1e-12 * ref.abs().max().item()
    else:
        assert (other - ref).abs().max().item() > 1e-6


def test_edm_deterministic_sampler_is_edm_heun_with_final_denoising():
    n = 18
    sde, ts, _ = _karras_ve(n)
    latents = _noise(seed=2)
    ref = _edm_sampler(_denoiser, latents, torch.zeros_like, n, 0.002, 80.0, 7.0, 0.0, 0.0, math.inf, 1.0)
    score = MIX.diffused(sde).score
    for recipe in (dict(sampler=EDMHeun(), denoise=True), dict(sampler=EDMHeun(to_zero=True))):
        ours = scoresde.sample(sde, score, grid=ts, x_init=80.0 * latents, **recipe)
        assert (ours - ref).abs().max().item() < 1e-12 * ref.abs().max().item()


# ---------------------------------------------------------------------- score_sde_pytorch
def _score_sde_pc_vp(score_fn, x, gen, N, snr, n_steps, predictor, eps=1e-3, beta_min=0.1, beta_max=20.0):
    """score_sde_pytorch's `pc_sampler` with `ReverseDiffusionPredictor` or `AncestralSamplingPredictor` and
    `LangevinCorrector` on its `VPSDE(N=N)` (sde_lib.py, sampling.py), written out; returns x (`denoise=False`)."""
    discrete_betas = torch.linspace(beta_min / N, beta_max / N, N, dtype=torch.float64)
    alphas = 1.0 - discrete_betas
    randn_like = lambda v: torch.randn(v.shape, generator=gen, dtype=v.dtype)  # noqa: E731
    timesteps = torch.linspace(1.0, eps, N, dtype=torch.float64)
    for i in range(N):
        vec_t = torch.ones(x.shape[0], dtype=torch.float64) * timesteps[i]
        timestep = (vec_t * (N - 1) / 1.0).long()
        # LangevinCorrector.update_fn
        alpha = alphas[timestep]
        for _ in range(n_steps):
            grad = score_fn(x, vec_t)
            noise = randn_like(x)
            grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
            noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
            step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
            x_mean = x + step_size[:, None] * grad
            x = x_mean + torch.sqrt(step_size * 2)[:, None] * noise
        beta = discrete_betas[timestep]
        if predictor == "ancestral":
            # AncestralSamplingPredictor.vpsde_update_fn
            score = score_fn(x, vec_t)
            x_mean = (x + beta[:, None] * score) / torch.sqrt(1.0 - beta)[:, None]
            noise = randn_like(x)
            x = x_mean + torch.sqrt(beta)[:, None] * noise
            continue
        # ReverseDiffusionPredictor.update_fn: rsde.discretize = (f - G^2 score, G)
        f = torch.sqrt(alphas[timestep])[:, None] * x - x
        G = torch.sqrt(beta)
        rev_f = f - G[:, None] ** 2 * score_fn(x, vec_t)
        z = randn_like(x)
        x_mean = x - rev_f
        x = x_mean + G[:, None] * z
    return x


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
def test_score_sde_pc_sampler_is_predictor_corrector_on_the_chains_interpolated_sde(predictor):
    """The DDPM chain's interpolated SDE on its own times k/N (transitions = score_sde's discrete betas),
    the network called at score_sde's times, the corrector first with batch-mean norms and no cap; score_sde's
    ancestral predictor draws with the transition variance beta."""
    N, snr, eps = 40, 0.16, 1e-3
    linear = VPSDE()
    exact = MIX.diffused(linear)
    x_T = _noise(seed=4)
    ref = _score_sde_pc_vp(exact.score, x_T.clone(), torch.Generator().manual_seed(5), N, snr, 1, predictor, eps=eps)

    chain_sde = linear.discretize(N).to_sde("interpolated")
    grid = torch.arange(N, -1, -1, dtype=torch.float64) / N  # t_i = (N - i)/N, ending at t = 0

    def score(x, t):  # grid step i = N (1 - t) is score_sde's time 1 - i (1 - eps)/(N - 1)
        return exact.score(x, 1.0 - N * (1.0 - t) * (1.0 - eps) / (N - 1))

    step = ReverseDiffusion() if predictor == "reverse_diffusion" else Ancestral(variance="transition")
    sampler = PredictorCorrector(step, LangevinCorrector(snr=snr, norms="batch", max_step=None), corrector_first=True)
    ours = scoresde.sample(chain_sde, score, sampler=sampler, grid=grid, x_init=x_T,
                           generator=torch.Generator().manual_seed(5))
    assert (ours - ref).abs().max().item() < 1e-10
    # the linear SDE's own transitions differ from the chain's betas
    other = scoresde.sample(linear, score, sampler=sampler, grid=grid.clamp(min=1e-5), x_init=x_T,
                            generator=torch.Generator().manual_seed(5))
    assert (other - ref).abs().max().item() > 1e-4


def test_batch_norms_are_score_sdes_step_size():
    """eps = 2 alpha (r mean||z|| / mean||g||)^2 for every sample; max_step caps it at max_step sigma^2."""
    g = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma2, alpha = torch.tensor(0.3, dtype=torch.float64), 0.97
    ref = (0.16 * z.flatten(1).norm(dim=1).mean() / g.flatten(1).norm(dim=1).mean()) ** 2 * 2 * alpha
    eps = LangevinCorrector(snr=0.16, norms="batch", max_step=None).step_size(g, z, sigma2, alpha)
    assert eps.shape == (8,) and torch.allclose(eps, ref.expand(8), rtol=1e-14, atol=0)
    capped = LangevinCorrector(snr=10.0, norms="batch").step_size(g, z, sigma2, alpha)
    assert torch.equal(capped, sigma2.expand(8))


# ---------------------------------------------------------------------- diffusers
def _diffusers_vp_problem(N=1000):
    """The VP SDE and the chain whose alphabar_k is the SDE's alpha^2 at t_k = (k + 1)/N (as test_peers)."""
    sde = VPSDE()
    t_k = torch.arange(1, N + 1, dtype=torch.float64) / N
    betas = scoresde.DDPMSchedule.from_alphas_cumprod(sde.marginal(t_k)[0] ** 2).betas.numpy()
    return sde, MIX.diffused(sde), betas


@pytest.mark.parametrize("steps, order", [(20, 2), (20, 3), (8, 3)])
def test_diffusers_unipc_lowers_its_final_orders_always(steps, order):
    """`UniPCMultistepScheduler` with its "linspace" spacing and its last step to sigma = 0 (`final_sigmas_type="zero"`)
    is UniPC(lower_order_final="always") on the chain's times and sample(..., denoise=True)."""
    diffusers = pytest.importorskip("diffusers")
    N = 1000
    sde, exact, betas = _diffusers_vp_problem(N)
    sched = diffusers.UniPCMultistepScheduler(num_train_timesteps=N, trained_betas=betas, solver_order=order)
    sched.set_timesteps(steps)
    ks = [int(k) for k in sched.timesteps]
    x_T = _noise(seed=6)
    x = x_T.float()  # diffusers' UniPC solves its small systems in float32, in torch's default dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        for k in sched.timesteps:
            t = torch.full((B,), (int(k) + 1) / N, dtype=torch.float64)
            x = sched.step(exact.eps(x.double(), t).float(), k, x).prev_sample
    finally:
        torch.set_default_dtype(default)
    grid = torch.tensor([(k + 1) / N for k in ks], dtype=torch.float64)
    ours = scoresde.sample(sde, exact.score, sampler=UniPC(order=order, lower_order_final="always"), grid=grid,
                           x_init=x_T, denoise=True)
    err = (ours - x.double()).abs().max().item()
    assert err < 1e-4  # diffusers' float32 tables
    if steps >= 15 and order == 3:  # our default lowers the final orders only below 15 steps: a different method here
        # (for order 2 the lowering is the final denoising itself, the same under both rules)
        default = scoresde.sample(sde, exact.score, sampler=UniPC(order=order), grid=grid, x_init=x_T, denoise=True)
        assert (default - x.double()).abs().max().item() > 10 * err


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_diffusers_sigma_schedulers_on_their_sigmas(name, spacing):
    """diffusers' k-diffusion-style schedulers step the scaled variable x / alpha on their interpolated sigmas and
    end at sigma = 0: DDIM (Euler in sigma_hat), EDMHeun and LMS on the VP SDE at the times of those sigmas, ending
    at t = 0, with the eps model called at the same times."""
    diffusers = pytest.importorskip("diffusers")
    N, steps = 1000, 12
    sde, exact, betas = _diffusers_vp_problem(N)
    sched = getattr(diffusers, name)(num_train_timesteps=N, trained_betas=betas, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double()  # Heun repeats each inner sigma (two evaluations per step)
    lam_T = sde.log_snr(sde.T)  # diffusers' float32 sigma_max lies just past the SDE's end: clamp to it
    t_of = lambda sig: sde.t_from_log_snr((-2.0 * torch.log(sig)).clamp(min=lam_T))  # noqa: E731
    x_T = _noise(seed=8)
    x = x_T.clone() * sched.init_noise_sigma
    for i, k in enumerate(sched.timesteps):
        model_in = sched.scale_model_input(x, k)  # x / sqrt(sigma^2 + 1): the VP state
        x = sched.step(exact.eps(model_in.double(), t_of(sigmas[i]).expand(B)), k, x).prev_sample
    levels = torch.cat([sigmas[:1], sigmas[1::2]]) if name == "HeunDiscreteScheduler" else sigmas
    grid = torch.cat([t_of(levels[:-1]), torch.zeros(1, dtype=torch.float64)])
    sampler = {"EulerDiscreteScheduler": DDIM(), "HeunDiscreteScheduler": EDMHeun(), "LMSDiscreteScheduler": LMS()}[name]
    x_init = sde.marginal(grid[0])[0] * x_T * sched.init_noise_sigma
    ours = scoresde.sample(sde, exact.score, sampler=sampler, grid=grid, x_init=x_init)
    assert (ours - x.double()).abs().max().item() < 1e-4  # diffusers' float32 sigmas


# ---------------------------------------------------------------------- dpm-solver (LuChengTHU/dpm-solver)
def _dpm_solver_pp_multistep(denoise_fn, sde, x, steps, order, lower_order_final, t_end=1e-3, below=10):
    """`DPM_Solver(..., algorithm_type="dpmsolver++").sample(x, steps, order, skip_type="logSNR",
    method="multistep", lower_order_final, solver_type="dpmsolver")` of dpm_solver_pytorch.py, written out
    (its `lower_order_final` acts below 10 steps in the current code, below 15 in earlier releases)."""
    lam_T, lam_0 = (0.5 * sde.log_snr(torch.tensor([1.0, t_end], dtype=torch.float64))).tolist()
    timesteps = sde.t_from_log_snr(2.0 * torch.linspace(lam_T, lam_0, steps + 1, dtype=torch.float64))
    alpha, sigma = sde.marginal(timesteps)
    lam = torch.log(alpha) - torch.log(sigma)
    models, idx = [denoise_fn(x, timesteps[0])], [0]
    for step in range(1, steps + 1):
        if step < order:
            step_order = step  # warm-up: multistep_dpm_solver_update(..., order=step)
        elif lower_order_final and steps < below:
            step_order = min(order, steps + 1 - step)
        else:
            step_order = order
        s0, t = idx[-1], step
        h = lam[t] - lam[s0]
        phi_1 = torch.expm1(-h)
        x_t = (sigma[t] / sigma[s0]) * x - (alpha[t] * phi_1) * models[-1]
        if step_order == 2:
            r0 = (lam[s0] - lam[idx[-2]]) / h
            D1_0 = (1.0 / r0) * (models[-1] - models[-2])
            x_t = x_t - 0.5 * (alpha[t] * phi_1) * D1_0
        elif step_order == 3:
            r0 = (lam[s0] - lam[idx[-2]]) / h
            r1 = (lam[idx[-2]] - lam[idx[-3]]) / h
            D1_0 = (1.0 / r0) * (models[-1] - models[-2])
            D1_1 = (1.0 / r1) * (models[-2] - models[-3])
            D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
            D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
            phi_2 = phi_1 / h + 1.0
            phi_3 = phi_2 / h - 0.5
            x_t = x_t + (alpha[t] * phi_2) * D1 - (alpha[t] * phi_3) * D2
        x = x_t
        if step < steps:
            models.append(denoise_fn(x, timesteps[t]))
            idx.append(t)
    return x


@pytest.mark.parametrize("order, steps", [(2, 8), (2, 12), (3, 8), (3, 12), (3, 25)])
def test_dpm_solver_pp_multistep_is_dpm_solver_pp_with_half_second_difference(order, steps):
    """The authors' multistep DPM-Solver++ on its logSNR grid to t = 1e-3 is DPMSolverPP on UniformLogSNR, with the
    published 3M second difference (d2="half") and lower_order_final for fewer than 10 steps only."""
    sde = VPSDE()
    exact = MIX.diffused(sde)
    x_T = _noise(seed=9)
    ref = _dpm_solver_pp_multistep(lambda x, t: exact.denoiser(x, t.expand(B)), sde, x_T, steps, order, True)
    sampler = DPMSolverPP(order=order, d2="half", lower_order_final=steps < 10)
    ours = scoresde.sample(sde, exact.score, sampler=sampler, steps=steps, grid=scoresde.time_grids.UniformLogSNR(),
                           t_end=1e-3, x_init=x_T, denoise=False)
    assert (ours - ref).abs().max().item() < 1e-11


# ---------------------------------------------------------------------- LMS's order
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_step_has_local_error_of_order_p_plus_one(order):
    """One step with exact history, on a variable grid: integral of exp over the step minus sum_j c_j exp(sigma_{i-j})
    shrinks like h^(p+1) when the grid is refined."""
    errs = []
    for h in (0.1, 0.05, 0.025):
        nodes = [1.0 - h * (k + 0.3 * math.sin(k)) for k in range(order + 1)]  # decreasing, uneven
        i = order - 1
        c = lms_coefficients(nodes, i, order)
        approx = sum(cj * math.exp(nodes[i - j]) for j, cj in enumerate(c))
        errs.append(abs(math.exp(nodes[i + 1]) - math.exp(nodes[i]) - approx))
    slopes = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert min(slopes) > order + 0.8, (errs, slopes)


def test_lms_converges_on_a_gaussian_flow():
    """The probability flow of N(0, s^2) in VE is x(sigma) = x_T sqrt(s^2 + sigma^2)/sqrt(s^2 + sigma_T^2). The
    warm-up (orders 1, 2, 3 on the first steps, as k-diffusion) bounds the global order; still each halving of
    the step cuts the error by more than 8 where the flow is smooth (measured: 3.5 and 3.3 in log2)."""
    s, sigma_T, sigma_end = 0.5, 10.0, 0.1
    sde = VESDE(sigma_end, sigma_T)
    exact = GaussianMixture.gaussian(torch.zeros(1), s).diffused(sde)
    x_T = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None] * sigma_T
    truth = x_T * math.sqrt(s**2 + sigma_end**2) / math.sqrt(s**2 + sigma_T**2)
    errs = {}
    for order in (1, 4):
        errs[order] = []
        for n in (40, 80, 160):
            ours = scoresde.sample(sde, exact.score, sampler=LMS(order=order), steps=n, grid=scoresde.time_grids.UniformTime(),
                                   t_end=0.0, x_init=x_T, denoise=False)
            errs[order].append((ours - truth).abs().max().item())
    slopes = [math.log2(a / b) for a, b in zip(errs[4], errs[4][1:])]
    assert min(slopes) > 3.0, (errs, slopes)
    assert errs[4][-1] < 1e-3 * errs[1][-1]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: LMS(order=5), ValueError, r"order: expected one of \(1, 2, 3, 4\), got 5"),
        (lambda: LMS(order=0), ValueError, r"order: expected one of \(1, 2, 3, 4\), got 0"),
        (lambda: LMS(to_zero="yes"), TypeError, r"to_zero: expected a bool, got 'yes'"),
        (lambda: UniPC(lower_order_final="never"), ValueError,
         r"lower_order_final: expected one of \(True, False, 'always'\), got 'never'"),
        (lambda: DPMSolverPP(lower_order_final=1), ValueError,
         r"lower_order_final: expected one of \(True, False, 'always'\), got 1"),
        (lambda: LangevinCorrector(norms="mean"), ValueError,
         r"norms: expected one of \('sample', 'noise', 'batch'\), got 'mean'"),
        (lambda: PredictorCorrector(corrector_first=1), TypeError, r"corrector_first: expected a bool, got 1"),
        (lambda: EDMHeun(churn_per="grid"), ValueError, r"churn_per: expected one of \('step', 'level'\), got 'grid'"),
        (lambda: EDMHeun(to_zero=None), TypeError, r"to_zero: expected a bool, got None"),
        (lambda: DPMSolverPP(order=3, d2="published"), ValueError, r"d2: expected one of \('taylor', 'half'\), got 'published'"),
    ],
)
def test_bad_porting_options(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("sampler", [LMS(to_zero=True), EDMHeun(to_zero=True)])
def test_to_zero_with_a_final_denoising_or_a_noise_free_grid_is_refused(sampler):
    sde = VESDE(0.002, 80.0)
    with pytest.raises(ValueError, match=r"denoise: .*to_zero=True\) ends at zero noise"):
        scoresde.sample(sde, MIX.diffused(sde).score, (4, 2), sampler, steps=3, denoise=True, generator=0)
    vp = VPSDE()
    grid = torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="to_zero: the grid already ends at zero noise"):
        scoresde.sample(vp, MIX.diffused(vp).score, (4, 2), sampler, grid=grid, generator=0)


@pytest.mark.parametrize("device", devices())
def test_new_options_follow_the_state_device_and_dtype(device):
    """LMS, per-level churn with EDM's last step, and the batch-mean corrector keep the state's device and dtype,
    and on CUDA give the CPU's numbers to rounding (the same x_init, no noise or the same per-sample seeds)."""
    ve = VESDE(0.002, 80.0)
    score = MIX.diffused(ve).score
    vp = VPSDE()
    vp_score = MIX.diffused(vp).score
    for dtype in (torch.float32, torch.float64):
        x_T = (80.0 * _noise(seed=12)[:16]).to(device=device, dtype=dtype)
        runs = [
            (ve, score, dict(sampler=LMS(to_zero=True), steps=8, grid=KarrasGrid(7.0), t_end=0.0)),
            (ve, score, dict(sampler=EDMHeun(churn=3.0, churn_per="level", to_zero=True), steps=8,
                             grid=KarrasGrid(7.0), t_end=0.0, generator=list(range(16)))),
            (vp, vp_score, dict(sampler=PredictorCorrector(ReverseDiffusion(), LangevinCorrector(norms="batch"),
                                                           corrector_first=True), steps=20, generator=list(range(16)))),
        ]
        for sde, fn, kw in runs:
            x_init = x_T if sde is ve else x_T / 80.0
            out = scoresde.sample(sde, fn, x_init=x_init, **kw)
            assert out.device.type == device and out.dtype == dtype
            ref = scoresde.sample(sde, fn, x_init=x_init.cpu().double(), **kw)
            tol = 1e-3 if dtype == torch.float32 else 1e-9
            assert (out.cpu().double() - ref).abs().max().item() < tol * max(1.0, ref.abs().max().item())
