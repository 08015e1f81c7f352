"""Our samplers against diffusers' schedulers on the same exact noise prediction and the same grid.

diffusers is a test dependency (`pip install -e ".[test]"`); these tests skip without it.
The chain's betas are chosen so that its alphabar_k equal the SDE's alpha_t^2 at
t_k = (k + 1)/1000; diffusers keeps its tables in float32, which bounds the agreement.
"""

import pytest
import torch

import scoresde
from scoresde import DPMSolverPP, GaussianMixture, VPSDE

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers under numpy 2

N = 1000
K = [999, 700, 400, 200, 80, 20, 0]  # diffusers' timesteps: 7 evaluations, then a last step to sigma = 0


def _problem():
    sde = VPSDE()
    mix = GaussianMixture.ring(4, radius=2.0, std=0.3, weights=[1.0, 2.0, 3.0, 4.0])
    exact = mix.diffused(sde)
    t_k = torch.arange(1, N + 1, dtype=torch.float64) / N
    betas = scoresde.DDPMSchedule.from_alphas_cumprod(sde.marginal(t_k)[0] ** 2).betas.numpy()
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return sde, exact, betas, x_T


def _diffusers_dpm(exact, betas, x_T, order):
    sched = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=N, trained_betas=betas, solver_order=order,
                                                  lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(timesteps=K)
    x = x_T.clone()
    for k in sched.timesteps:
        t = torch.full((x.shape[0],), (int(k) + 1) / N, dtype=x.dtype)
        x = sched.step(exact.eps(x, t), k, x).prev_sample
    return x


@pytest.mark.parametrize("order, d2", [(2, "taylor"), (3, "half")])
def test_dpm_solver_with_final_denoising_is_diffusers_dpm_solver_ending_at_zero_noise(order, d2):
    """Six steps to t = 1e-3 then Tweedie = diffusers' seven evaluations and its last step to sigma = 0.

    The denoising counts as the first-order last step, so on this short grid (lower orders at
    the end) the grid's own last step stays second order, as diffusers' second-to-last step.
    3M agrees with the published update when it takes half our second difference (d2="half").
    """
    sde, exact, betas, x_T = _problem()
    ref = _diffusers_dpm(exact, betas, x_T, order=order).double()
    grid = torch.tensor([(k + 1) / N for k in K], dtype=torch.float64)
    ours = scoresde.sample(sde, exact.score, sampler=DPMSolverPP(order=order, d2=d2), grid=grid, x_init=x_T,
                           denoise=True)
    err = (ours - ref).abs().max().item()
    assert err < 1e-4  # float32 tables in diffusers
    if order == 3:  # the third-order (Taylor) second difference is a different method
        taylor = scoresde.sample(sde, exact.score, sampler=DPMSolverPP(order=3), grid=grid, x_init=x_T, denoise=True)
        assert (taylor - ref).abs().max().item() > 100 * err
        return
    # a first-order last grid step (the denoising not counted as a step) is a different method
    first_order_last = scoresde.sample(sde, exact.score, sampler=DPMSolverPP(order=2), grid=grid, x_init=x_T, denoise=False)
    alpha, sigma = sde.marginal(grid[-1])
    tweedie = (first_order_last + sigma**2 * exact.score(first_order_last, grid[-1].expand(512))) / alpha
    assert (tweedie - ref).abs().max().item() > 100 * err


def test_order_schedule_counts_the_final_denoising():
    """With denoising, lower_order_final changes nothing for 2M on a short grid (the last grid step is the
    second-to-last step); without it, the last grid step is first order."""
    sde, exact, _, x_T = _problem()
    kw = dict(steps=6, x_init=x_T)
    run = lambda lof, d: scoresde.sample(sde, exact.score, sampler=DPMSolverPP(order=2, lower_order_final=lof), denoise=d, **kw)  # noqa: E731
    assert torch.equal(run(True, True), run(False, True))
    assert not torch.allclose(run(True, False), run(False, False), atol=1e-6)


def _last_step_by_ddim(sde, exact, sampler, grid, x_T):
    """`sampler` over the grid but its last point, then DDIM's first-order step over the last interval."""
    from scoresde import DDIM

    head = scoresde.sample(sde, exact.score, sampler=sampler, grid=grid[:-1], x_init=x_T, denoise=False)
    return scoresde.sample(sde, exact.score, sampler=DDIM(), grid=grid[-2:], x_init=head, denoise=False)


def test_a_step_more_than_twice_as_long_in_log_snr_is_first_order():
    """On a grid whose last step jumps in lambda (5x the previous one), the multistep samplers take it with
    DDIM's first-order step: the same as stopping one point earlier and finishing with DDIM."""
    from scoresde import UniPC

    sde, exact, _, x_T = _problem()
    grid = torch.tensor([1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.001], dtype=torch.float64)
    lam = 0.5 * sde.log_snr(grid)
    h = lam.diff()
    assert h[-1] > 2 * h[-2] and bool((h[1:-1] <= 2 * h[:-2]).all())
    for sampler in (DPMSolverPP(order=2, lower_order_final=False), DPMSolverPP(order=3, lower_order_final=False),
                    UniPC(order=2, lower_order_final=False, corrector=False)):
        full = scoresde.sample(sde, exact.score, sampler=sampler, grid=grid, x_init=x_T, denoise=False)
        tail = _last_step_by_ddim(sde, exact, sampler, grid, x_T)
        assert torch.allclose(full, tail, rtol=0, atol=1e-12), sampler
    # a step at most twice the previous one keeps its order: moving the last point closer changes the method
    near = grid.clone()
    near[-1] = 0.12
    assert 0.5 * (sde.log_snr(near[-1:]) - sde.log_snr(near[-2:-1])) <= 2 * h[-2]
    sampler = DPMSolverPP(order=2, lower_order_final=False)
    full = scoresde.sample(sde, exact.score, sampler=sampler, grid=near, x_init=x_T, denoise=False)
    tail = _last_step_by_ddim(sde, exact, sampler, near, x_T)
    assert (full - tail).abs().max() > 1e-4
