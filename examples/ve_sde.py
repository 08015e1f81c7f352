"""The VE SDE as NCSN on scikit-learn's 8x8 digits: the noise-conditional loss, then annealed Langevin dynamics.

$dx = \\sqrt{d\\sigma^2(t)/dt}\\,dw$ with geometric $\\sigma(t)$ is NCSN's continuous limit:
its noise levels are the VE SDE's at the grid times (`VESDE.discretize(L)`, and back with
`NCSNSchedule.to_sde()`).

Noise levels follow NCSNv2's recipe (Song & Ermon 2020): $\\sigma_{\\max}$ is the largest
distance between two training digits, the geometric ratio is chosen for the data
dimension (64), and the Langevin step size makes each level's chain end at the right
variance. The U-Net is trained with `NCSNLoss` ($\\lambda(\\sigma) = \\sigma^2$ over the
levels, Song & Ermon 2019) and predicts the noise, so its score is $-\\hat\\varepsilon/\\sigma$,
NCSNv2's $s_\\theta(x)/\\sigma$ parameterisation. Sampling runs annealed Langevin dynamics
over the same levels, with and without NCSNv2's final denoising step; since the levels
are exactly the VE SDE's at the grid times, the same network also drives a VE-SDE sampler.
Run (a few minutes on a laptop CPU):

    python examples/ve_sde.py --out out/ve_sde

It writes `samples.png` and `loss.png`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
import scoresde  # noqa: E402
import train_digits  # noqa: E402
from scoresde import AnnealedLangevin, PredictorCorrector, Trainer  # noqa: E402
from scoresde.losses import NCSNLoss  # noqa: E402
from scoresde.plotting import save_loss_curve  # noqa: E402
from scoresde.samplers import ncsn_levels, ncsn_sigma_max, ncsn_step_size  # noqa: E402


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0], steps=2000, out="out/ve_sde")
    p.add_argument("--langevin-steps", type=int, default=5, help="Langevin steps per noise level")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.langevin_steps = min(args.steps, 20), 1
    device = C.device_of(args.device)
    (x, _), (held_out, _) = C.split_digits(args.seed)

    # NCSNv2 techniques 1 and 2: sigma_max from the data, the ratio from the dimension
    levels = ncsn_levels(sigma_min=0.01, sigma_max=ncsn_sigma_max(x), dim=x[0].numel())
    sde = levels.to_sde()  # the VE SDE whose sigma(t_i) are these levels
    print(f"{levels.L} noise levels from {levels.sigmas[0]:.3g} to {levels.sigmas[-1]:.3g} (ratio {levels.ratio:.4f})")

    torch.manual_seed(args.seed)
    model = C.score_model(train_digits.unet(args.smoke), sde, x).to(device)
    trainer = Trainer(
        model, NCSNLoss(levels), x.to(device), steps=args.steps, batch_size=128, lr=1e-3,
        warmup_steps=min(200, args.steps // 10), lr_schedule="cosine", ema_decay=0.999, seed=args.seed,
        progress=not args.smoke,
    )
    with C.Timer() as clock:
        history = trainer.train()
    print(f"trained {args.steps} steps in {clock.seconds:.0f} s")
    model = trainer.ema.module.eval()

    # NCSNv2 technique 4: the step size for this ratio, steps per level and smallest level
    eps = ncsn_step_size(levels.ratio, args.langevin_steps, levels.sigmas[0].item())
    langevin = AnnealedLangevin(n_steps_each=args.langevin_steps, step_lr=eps)
    n, steps = (16, 2) if args.smoke else (100, levels.L - 1)  # L - 1 steps of the uniform grid: the L levels
    g = lambda: torch.Generator(device=device).manual_seed(args.seed)  # noqa: E731
    panels = {"real digits": held_out[:n]}
    with torch.no_grad():
        panels[f"annealed Langevin, {levels.L} x {args.langevin_steps} steps"] = scoresde.sample(
            sde, model, (n, 1, 8, 8), langevin, steps=steps, generator=g(), device=device, denoise=False)
        panels["... + final denoising (NCSNv2)"] = scoresde.sample(
            sde, model, (n, 1, 8, 8), langevin, steps=steps, generator=g(), device=device, denoise=True)
        pc_steps = 2 if args.smoke else 250
        panels[f"VE-SDE predictor-corrector, {pc_steps} steps"] = scoresde.sample(
            sde, model, (n, 1, 8, 8), PredictorCorrector(), steps=pc_steps, generator=g(), device=device, denoise=True)
    C.announce(C.image_panels(panels, args.out / "samples.png", suptitle="NCSN on digits"))
    C.announce(save_loss_curve(history, args.out / "loss.png"))
    for title, samples in list(panels.items())[1:]:
        print(f"  {title:42s} mean distance to the nearest training digit {C.nearest_distance(samples.clamp(-1, 1), x).mean():.3f}")
    return {"levels": levels.L}


if __name__ == "__main__":
    main()
