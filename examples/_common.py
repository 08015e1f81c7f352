"""Shared pieces of the training examples: data sets, SDEs, the model, samplers, plots, metrics.

Everything here goes through the public API of `scoresde`; the example scripts import it
as `_common` (it sits next to them). The benchmark `benchmarks/bench_training.py` reuses it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import scoresde
from scoresde import (
    DDIM,
    VESDE,
    VPSDE,
    DPMSolverPP,
    GaussianMixture,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    ScoreModel,
    SubVPSDE,
    nets,
)
from scoresde.plotting import image_grid
from scoresde.samplers import ncsn_sigma_max

SDE_NAMES = ("vp", "subvp", "ve")
SDE_TITLES = {"vp": "VP", "subvp": "sub-VP", "ve": "VE"}
TOY_SETS = ("moons", "swissroll", "ring")


# ---------------------------------------------------------------------- command line
def parser(description: str, steps: int, out: str) -> argparse.ArgumentParser:
    """The options every example takes: --device, --steps, --out, --seed, --smoke."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (CUDA if present)")
    p.add_argument("--steps", type=int, default=steps, help="training steps")
    p.add_argument("--out", type=Path, default=Path(out), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the samplers")
    p.add_argument("--smoke", action="store_true", help="a seconds-long run with tiny settings (for the tests)")
    return p


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def announce(path: Path) -> None:
    print(f"wrote {path}")


# ---------------------------------------------------------------------- data
def two_moons(n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """`n` independent draws from the two-moons distribution of scikit-learn's `make_moons`.

    Each point picks a half circle with probability 1/2 (the upper one centred at (0, 0),
    the lower one at (1, 0.5)), an angle uniform on [0, pi], and Gaussian noise of std
    `noise` per coordinate. `make_moons` itself places the points at *evenly spaced* angles
    with exactly half on each moon: a stratified sample, not an i.i.d. one. Two stratified
    sets are much closer to each other than i.i.d. sets (the sliced W2 between two of 2000
    points is 3.7 times smaller), so a noise floor measured with them is one that no sampler,
    whose draws are independent, can reach.
    """
    upper = rng.random(n) < 0.5
    theta = rng.uniform(0.0, math.pi, n)
    x = np.where(upper, np.cos(theta), 1.0 - np.cos(theta))
    y = np.where(upper, np.sin(theta), 0.5 - np.sin(theta))
    return np.stack([x, y], 1) + noise * rng.standard_normal((n, 2))


def _toy_raw(name: str, n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll

    if name == "moons":
        x = two_moons(n, 0.05, np.random.default_rng(seed))
    elif name == "swissroll":
        x3, _ = make_swiss_roll(n, noise=0.3, random_state=seed)
        x = x3[:, [0, 2]]
    elif name == "ring":
        mix = GaussianMixture.ring(8, radius=4.0, std=0.25)
        x = mix.sample(n, generator=torch.Generator().manual_seed(seed)).numpy()
    else:
        raise ValueError(f"data: expected one of {TOY_SETS}, got {name!r}")
    return np.asarray(x, dtype=np.float64)


_TOY_SCALE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def toy_data(name: str, n: int, seed: int) -> torch.Tensor:
    """`n` points of a 2-D toy set, standardised with constants fixed per data set (float32)."""
    if name not in _TOY_SCALE:  # the standardisation comes from a large reference draw, not from `n`
        ref = _toy_raw(name, 100_000, 12345)
        _TOY_SCALE[name] = (ref.mean(0), ref.std(0))
    mean, std = _TOY_SCALE[name]
    return torch.tensor((_toy_raw(name, n, seed) - mean) / std, dtype=torch.float32)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits as `(N, 1, 8, 8)` in [-1, 1] (pixel values 0..16), and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    return x, torch.tensor(d.target, dtype=torch.long)


# ---------------------------------------------------------------------- models
def make_sde(name: str, data: torch.Tensor):
    """VP and sub-VP with Song et al.'s betas; VE from 0.01 to the largest pairwise distance (NCSNv2)."""
    if name == "vp":
        return VPSDE()
    if name == "subvp":
        return SubVPSDE()
    if name == "ve":
        return VESDE(sigma_min=0.01, sigma_max=round(ncsn_sigma_max(data[:2000]), 1))
    raise ValueError(f"sde: expected one of {SDE_NAMES}, got {name!r}")


def score_model(net: torch.nn.Module, sde, data: torch.Tensor) -> ScoreModel:
    """An eps-predicting ScoreModel whose network sees its input scaled to unit variance."""
    return ScoreModel(nets.InputScaling(net, sde, data_std=data.std().item()), sde, prediction="eps")


def samplers(smoke: bool) -> dict:
    """Samplers to compare, with their step counts: two stochastic, two deterministic."""
    k = 0.02 if smoke else 1.0
    return {
        "reverse diffusion, 500 steps": (ReverseDiffusion(), max(2, int(500 * k))),
        # The corrector's noise-limit step rule is unbiased in any dimension (LangevinCorrector).
        "predictor-corrector, 250 steps": (PredictorCorrector(corrector=LangevinCorrector(norms="noise")), max(2, int(250 * k))),
        "DDIM (probability flow), 50 steps": (DDIM(), max(2, int(50 * k))),
        "DPM-Solver++(2M), 20 steps": (DPMSolverPP(order=2), max(2, int(20 * k))),
    }


@torch.no_grad()
def draw(sde, score, shape, sampler, steps, seed, device, **kwargs) -> torch.Tensor:
    """`scoresde.sample` from the prior, seeded, on `device` (`kwargs`: `grid`, `t_end`, `denoise`)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return scoresde.sample(sde, score, shape, sampler, steps=steps, generator=g, device=device, **kwargs)


# ---------------------------------------------------------------------- one forward process on digits
def digits_unet(smoke: bool) -> nets.UNet:
    """The digits U-Net: 8x8 -> 4x4, one residual block per level."""
    return nets.UNet(1, 8, channels=8 if smoke else 32, num_res_blocks=1, attention_resolutions=())


def run_digits(args, sde, title: str, loss, prediction: str, samplers: dict) -> dict:
    """Train the digits U-Net on `sde` with `loss`, sample it with each of `samplers`, write the figures.

    `samplers` maps a panel title to `(sampler, steps, options)` with `options` passed to
    `scoresde.sample` (`grid`, `t_end`, `denoise`). Writes `samples.png` (real digits, then one
    panel per sampler) and `loss.png` under `args.out`, and prints each sampler's mean distance
    from a sample to its nearest training digit next to the same for real held-out digits (a
    memorising model would sit far below the real value).
    """
    from scoresde import Trainer
    from scoresde.plotting import save_loss_curve

    if args.smoke:
        args.steps = min(args.steps, 20)
    device = device_of(args.device)
    (x, _), (held_out, _) = split_digits(args.seed)  # 1500 to train on, 297 held out
    torch.manual_seed(args.seed)
    net = nets.InputScaling(digits_unet(args.smoke), sde, data_std=x.std().item())
    model = ScoreModel(net, sde, prediction=prediction).to(device)
    trainer = Trainer(
        model, loss, x.to(device), steps=args.steps, batch_size=128, lr=1e-3, warmup_steps=min(200, args.steps // 10),
        lr_schedule="cosine", grad_clip=1.0, ema_decay=0.999, seed=args.seed, progress=not args.smoke,
    )
    with Timer() as clock:
        history = trainer.train()
    print(f"trained {args.steps} steps with {sde!r} in {clock.seconds:.0f} s")
    model = trainer.ema.module.eval()
    n = 16 if args.smoke else 100
    panels = {"real digits": held_out[:n]}
    rows = []
    for name, (sampler, steps, options) in samplers.items():
        steps = min(steps, 3) if args.smoke and steps is not None else steps
        samples = draw(sde, model, (n, 1, 8, 8), sampler, steps, args.seed, device, **options).clamp(-1, 1)
        panels[name] = samples
        rows.append((name, nearest_distance(samples, x).mean().item()))
    announce(image_panels(panels, args.out / "samples.png", suptitle=title))
    announce(save_loss_curve(history, args.out / "loss.png"))
    real = nearest_distance(held_out, x).mean().item()
    print(f"\nmean distance to the nearest training digit (real held-out digits: {real:.3f})")
    for name, d in rows:
        print(f"  {name:44s} {d:.3f}")
    return {"real_nn": real, "rows": rows}


# ---------------------------------------------------------------------- metrics
def sliced_w2(x: torch.Tensor, y: torch.Tensor, n_proj: int = 512, seed: int = 0) -> float:
    r"""Sliced Wasserstein-2 distance $\big(E_\theta W_2^2(\theta^\top x, \theta^\top y)\big)^{1/2}$ of two equal-size samples.

    Directions are uniform on the sphere (fixed seed); each 1-D $W_2^2$ between empirical
    measures of equal size is the mean squared difference of the sorted projections.
    """
    x, y = x.detach().double().cpu().flatten(1), y.detach().double().cpu().flatten(1)
    if x.shape != y.shape:
        raise ValueError(f"y: expected the shape of x, {tuple(x.shape)}, got {tuple(y.shape)}")
    theta = torch.randn(x.shape[1], n_proj, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return math.sqrt(((px - py) ** 2).mean().item())


class HeldOut:
    """Independent held-out sets of a toy set, for sliced W2 against the two-sample noise floor.

    `sets` are `2 * pairs` sets of `n` fresh points. The *noise floor* is the mean sliced W2
    between the pairs `(sets[2k], sets[2k + 1])`: what a perfect model (i.i.d. draws from the
    data distribution) would score. A model's distance, `distance(x)`, is the mean over the
    first `pairs` sets, so both numbers average the same amount of sampling noise.
    """

    def __init__(self, name: str, n: int, seed: int, pairs: int = 5, n_proj: int = 512):
        self.sets = [toy_data(name, n, seed + 1000 * (k + 1)) for k in range(2 * pairs)]
        self.n_proj = n_proj
        self.floors = [sliced_w2(self.sets[2 * k], self.sets[2 * k + 1], n_proj) for k in range(pairs)]
        self.floor = float(np.mean(self.floors))
        self.floor_std = float(np.std(self.floors, ddof=1)) if pairs > 1 else math.nan
        self.pairs = pairs

    def distance(self, x: torch.Tensor) -> float:
        return float(np.mean([sliced_w2(x, y, self.n_proj) for y in self.sets[: self.pairs]]))


def digit_classifier(x: torch.Tensor, y: torch.Tensor):
    """An RBF support-vector classifier of digits `(N, 1, 8, 8)` in [-1, 1] (about 99% on held-out digits)."""
    from sklearn.svm import SVC

    return SVC(C=10.0, gamma="scale").fit(x.flatten(1).numpy(), y.numpy())


def classify(classifier, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels of images `(N, 1, 8, 8)` (clamped to [-1, 1] first)."""
    return torch.as_tensor(classifier.predict(x.detach().float().cpu().clamp(-1, 1).flatten(1).numpy()))


def nearest_distance(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The L2 distance (in [-1, 1] pixel units) from each sample to its nearest reference image."""
    return torch.cdist(samples.flatten(1).float().cpu(), reference.flatten(1).float().cpu()).min(1).values


def split_digits(seed: int, held_out: int = 297):
    """Digits split into a training set (1500) and a held-out set (297), with labels."""
    x, y = digits()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    tr, te = perm[held_out:], perm[:held_out]
    return (x[tr], y[tr]), (x[te], y[te])


# ---------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_grid(rows: dict[str, dict[str, torch.Tensor]], path: Path, lim: float = 3.0) -> Path:
    """A grid of 2-D scatter plots: one row per entry of `rows`, one column per inner entry."""
    plt = _plt()
    ncols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.6 * len(rows)), squeeze=False)
    for i, (row_title, panels) in enumerate(rows.items()):
        for j, (title, xy) in enumerate(panels.items()):
            ax = axes[i, j]
            xy = xy.detach().float().cpu().numpy()
            ax.scatter(xy[:, 0], xy[:, 1], s=1, alpha=0.4, rasterized=True)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel(row_title)
        for j in range(len(panels), ncols):
            axes[i, j].axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_panels(panels: dict[str, torch.Tensor], path: Path, nrow: int = 10, suptitle: str | None = None) -> Path:
    """Image grids side by side, each titled, in one PNG."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels.items()):
        ax.imshow(image_grid(images, nrow=nrow), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(histories: dict[str, object], path: Path, smooth: int = 100) -> Path:
    """Training losses of several runs (moving averages) in one PNG, log scale."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, h in histories.items():
        losses = np.asarray(h.losses)
        k = max(1, min(smooth, len(losses) // 5 or 1))
        avg = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(np.asarray(h.steps)[k - 1 :], avg, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (moving average)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
