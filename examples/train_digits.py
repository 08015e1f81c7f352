"""Train a small U-Net score model on scikit-learn's 8x8 handwritten digits and sample it four ways.

The 1797 digits ship inside scikit-learn (no download); pixels are mapped to [-1, 1]. A
`nets.UNet` predicting the noise is trained with the continuous-time denoising
score-matching loss under the chosen SDE (VP, sub-VP or VE), keeping an EMA of its weights,
and the EMA model is sampled with the reverse SDE (Euler-Maruyama), predictor-corrector,
DDIM and DPM-Solver++. Run (a few minutes on a laptop CPU; `--sde subvp` or `--sde ve`
for the other SDEs):

    python examples/train_digits.py --sde vp --out out/digits_vp

It writes `samples.png` (real digits, then 100 samples per sampler), `loss.png`, and prints
each sampler's mean distance from a sample to its nearest training digit next to the same
for real held-out digits (a memorising model would sit far below the real value).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from scoresde import DSMLoss, Trainer, nets  # noqa: E402
from scoresde.plotting import save_loss_curve  # noqa: E402


def unet(smoke: bool, num_classes: int | None = None) -> nets.UNet:
    """The digits U-Net: 8x8 -> 4x4, one residual block per level, attention in the middle."""
    if smoke:
        return nets.UNet(1, 8, channels=8, num_res_blocks=1, attention_resolutions=(), num_classes=num_classes)
    return nets.UNet(1, 8, channels=32, num_res_blocks=1, attention_resolutions=(), num_classes=num_classes)


def train(sde_name: str, x: torch.Tensor, steps: int, device: torch.device, seed: int = 0, smoke: bool = False,
          progress: bool = True, labels: torch.Tensor | None = None, label_dropout: float = 0.0):
    """Train the U-Net on digits `x` (with class labels when given); returns (sde, EMA model, history)."""
    sde = C.make_sde(sde_name, x)
    torch.manual_seed(seed)
    model = C.score_model(unet(smoke, 10 if labels is not None else None), sde, x).to(device)
    data = (x.to(device), labels.to(device)) if labels is not None else x.to(device)
    trainer = Trainer(
        model, DSMLoss(), data, steps=steps, batch_size=128, lr=1e-3, warmup_steps=min(200, steps // 10),
        lr_schedule="cosine", grad_clip=1.0, ema_decay=0.999, label_dropout=label_dropout, seed=seed,
        progress=progress,
    )
    history = trainer.train()
    return sde, trainer.ema.module.eval(), history


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0], steps=2000, out="out/digits")
    p.add_argument("--sde", choices=C.SDE_NAMES, default="vp", help="which SDE to train")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps = min(args.steps, 20)
    device = C.device_of(args.device)
    (train_x, _), (held_out, _) = C.split_digits(args.seed)  # 1500 to train on, 297 held out
    with C.Timer() as clock:
        sde, model, history = train(args.sde, train_x, args.steps, device, args.seed, args.smoke, progress=not args.smoke)
    print(f"trained {args.steps} steps with the {C.SDE_TITLES[args.sde]} SDE in {clock.seconds:.0f} s")

    n = 16 if args.smoke else 100
    panels = {"real digits": held_out[:n]}
    real_nn = C.nearest_distance(held_out, train_x).mean().item()
    rows = []
    for title, (sampler, steps) in C.samplers(args.smoke).items():
        samples = C.draw(sde, model, (n, 1, 8, 8), sampler, steps, args.seed, device).clamp(-1, 1)
        panels[title] = samples
        rows.append((title, C.nearest_distance(samples, train_x).mean().item()))
    C.announce(C.image_panels(panels, args.out / "samples.png", suptitle=f"{C.SDE_TITLES[args.sde]} SDE"))
    C.announce(save_loss_curve(history, args.out / "loss.png"))
    print(f"\nmean distance to the nearest training digit (real held-out digits: {real_nn:.3f})")
    for title, d in rows:
        print(f"  {title:42s} {d:.3f}")
    return {"real_nn": real_nn, "rows": rows}


if __name__ == "__main__":
    main()
