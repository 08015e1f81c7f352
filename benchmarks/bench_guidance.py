"""Guidance benchmarks: cost of classifier-free and classifier guidance, and what guidance does to samples.

1. Cost per guided score evaluation (median wall time) for a class-conditional U-Net
   (32x32x3) and MLP (2-D): the network alone, classifier-free guidance in one batched
   forward pass of 2B (`cfg_score`), two passes (`batched=False`), and classifier guidance
   (one classifier forward and backward on top of the score).
2. What classifier-free guidance does on the labelled ring with exact scores: samples at
   scale w (ancestral sampling, 200 steps, VP SDE) against the tilted density
   p(x) p(y|x)^w evaluated on a grid. Both concentrate on the label's modes, but CFG
   sampling is not sampling the tilted density (its weights and spreads differ), the
   known gap between guided diffusion and the tilted target.

Usage: python benchmarks/bench_guidance.py [--out benchmarks/results] [--device cuda] [--quick] [--only cost|quality]
Prints Markdown tables and saves `guidance_samples.png` to --out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from scoresde import (
    VPSDE,
    GaussianMixture,
    ScoreModel,
    cfg_score,
    classifier_guided_score,
    guided_score,
    impute,
    nets,
)
from scoresde.guidance import GuidanceInterval, classifier_log_prob


def timed(fn, device, reps):
    """Median wall time of fn() in milliseconds (CUDA synchronised), after three warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


class TimeClassifier(nn.Module):
    """A noisy classifier as large as the score network: its trunk and a linear head."""

    def __init__(self, trunk, features, classes):
        super().__init__()
        self.trunk, self.head = trunk, nn.Linear(features, classes)

    def forward(self, x, t):
        return self.head(self.trunk(x, t).flatten(1))


def cost_table(device, quick):
    sde = VPSDE()
    rows = []
    configs = [
        ("U-Net 32x32x3, B=64", lambda: nets.UNet(3, 32, channels=64, channel_mults=(1, 2, 2), num_classes=10), (64, 3, 32, 32)),
        ("MLP 2-D, B=4096", lambda: nets.MLP(2, hidden=256, depth=3, num_classes=10), (4096, 2)),
    ]
    for name, make, shape in configs:
        if quick and "U-Net" in name and device.type == "cpu":
            shape = (8, 3, 32, 32)
            name = "U-Net 32x32x3, B=8"
        net = make().to(device).eval()
        model = ScoreModel(net, sde, prediction="eps")
        B = shape[0]
        x = torch.randn(shape, device=device)
        t = torch.full((B,), 0.5, device=device)
        y = torch.randint(0, 10, (B,), device=device)
        null = torch.full((B,), 10, device=device)
        clf = TimeClassifier(make(), x[0].numel(), 10).to(device).eval()
        reps = 5 if quick else 30
        with torch.no_grad():
            t_net = timed(lambda: model(x, t, y=y), device, reps)
            t_batched = timed(lambda: cfg_score(model, {"y": y}, {"y": null}, 3.0)(x, t), device, reps)
            t_two = timed(lambda: cfg_score(model, {"y": y}, {"y": null}, 3.0, batched=False)(x, t), device, reps)
            cg = classifier_guided_score(lambda x, t: model(x, t, y=null), classifier_log_prob(clf, y), 3.0)
            t_cg = timed(lambda: cg(x, t), device, reps)
        rows.append((name, t_net, t_batched, t_two, t_cg))
    print(f"\n### Cost per guided score evaluation ({device.type}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'})\n")
    print("| network | score alone (ms) | CFG, one pass of 2B (ms) | CFG, two passes (ms) | classifier guidance (ms) |")
    print("|---|---|---|---|---|")
    for name, a, b, c, d in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} ({b / a:.2f}x) | {c:.2f} ({c / a:.2f}x) | {d:.2f} ({d / a:.2f}x) |")


def tilted_weights(mix, y, w, grid=600, lim=6.0):
    """Mode weights and within-mode spread of p(x) p(y|x)^w on a grid (2-D)."""
    g = torch.linspace(-lim, lim, grid, dtype=torch.float64)
    xx = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logp = mix.log_prob(xx) + w * mix.class_log_prob(xx, y)
    p = torch.softmax(logp, 0)
    k = torch.cdist(xx, mix.means).argmin(1)
    weights = torch.zeros(mix.K, dtype=torch.float64).index_add_(0, k, p)
    spread = ((xx - mix.means[k]).pow(2).sum(-1) * p).sum().div(2).sqrt()
    return weights, spread.item()


def quality_table(device, quick, out):
    torch.manual_seed(0)
    sde = VPSDE()
    mix = GaussianMixture.ring(6, radius=3.0, std=0.4, weights=[1, 2, 3, 4, 5, 6], labels=[0, 1, 2, 0, 1, 2])
    exact = mix.diffused(sde)
    y, n = 2, 4000 if quick else 20000
    scales = [0.0, 1.0, 2.0, 4.0, 8.0]
    print("\n### CFG on the labelled ring (label 2 = components 2 and 5, weights 3 : 6, std 0.4), exact scores\n")
    print("| scale w | on label (sampled) | on label (tilted) | w_5 / (w_2 + w_5) sampled | tilted | spread sampled | tilted |")
    print("|---|---|---|---|---|---|---|")
    samples = {}
    empty = torch.zeros(2, dtype=torch.bool, device=device)
    for w in scales:
        guided = guided_score(exact.score, exact.conditional(y).score, w)
        gen = torch.Generator(device).manual_seed(0)
        with torch.no_grad():
            x = impute(sde, guided, torch.zeros(n, 2, device=device), empty, steps=200, generator=gen,
                       denoise=False).cpu()  # to t_end, as measured
        samples[w] = x
        k = torch.cdist(x, mix.means).argmin(1)
        on = mix.labels[k] == y
        frac5 = (k[on] == 5).double().mean().item()
        spread = ((x - mix.means[k]).pow(2).sum(-1).mean() / 2).sqrt().item()
        tw, tspread = tilted_weights(mix, y, w)
        t_on = (tw[2] + tw[5]).item()
        print(f"| {w:g} | {on.double().mean().item():.3f} | {t_on:.3f} | {frac5:.3f} | {(tw[5] / (tw[2] + tw[5])).item():.3f} | {spread:.3f} | {tspread:.3f} |")
    # The guidance interval: strong guidance (w = 4) only on sigma in (0.3, 3].
    print("\n| interval (w = 4 inside, 1 outside) | on label | w_5 / (w_2 + w_5) | spread |")
    print("|---|---|---|---|")
    for lo, hi in [(0.0, 1e9), (0.3, 3.0), (3.0, 1e9), (0.0, 0.3)]:
        guided = guided_score(exact.score, exact.conditional(y).score, GuidanceInterval(4.0, lo, hi), sde=sde)
        gen = torch.Generator(device).manual_seed(0)
        with torch.no_grad():
            x = impute(sde, guided, torch.zeros(n, 2, device=device), empty, steps=200, generator=gen,
                       denoise=False).cpu()  # to t_end, as measured
        k = torch.cdist(x, mix.means).argmin(1)
        spread = ((x - mix.means[k]).pow(2).sum(-1).mean() / 2).sqrt().item()
        on = mix.labels[k] == y
        frac5 = (k[on] == 5).double().mean().item()
        print(f"| sigma in ({lo:g}, {hi:g}] | {on.double().mean().item():.3f} | {frac5:.3f} | {spread:.3f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(scales), figsize=(3 * len(scales), 3), sharex=True, sharey=True)
    for ax, w in zip(axes, scales):
        x = samples[w][:4000]
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
        ax.scatter(mix.means[:, 0], mix.means[:, 1], c=["C3" if l == y else "k" for l in mix.labels.tolist()], marker="x")
        ax.set_title(f"w = {w:g}")
        ax.set_aspect("equal")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "guidance_samples.png", dpi=100)
    print(f"\nsaved {out / 'guidance_samples.png'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and samples")
    parser.add_argument("--only", choices=["cost", "quality"], help="run one of the two parts")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.only in (None, "cost"):
        cost_table(device, args.quick)
    if args.only in (None, "quality"):
        torch.set_default_dtype(torch.float64)
        quality_table(device, args.quick, args.out)


if __name__ == "__main__":
    main()
