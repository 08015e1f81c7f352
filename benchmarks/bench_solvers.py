"""Benchmarks of the `solvers` package (not a test: prints tables, saves a plot and JSON).

1. Per-step overhead of Euler-Maruyama: `solvers.integrate` against a hand-written loop
   (naive, and with fused kernels) and against `torchsde.sdeint`, on a cheap drift, for a
   batch of 10,000 x 2 and of 16 x 3 x 32 x 32. Targets: within 1.15x of the hand-written
   loop, at least 3x faster than torchsde.
2. Dormand-Prince: `solvers.Dopri5` against `scipy.integrate.solve_ivp(method="RK45")` and
   `torchdiffeq.odeint(method="dopri5")` at equal rtol/atol on the same problem, sweeping
   the tolerance: evaluations, wall time, error against the exact solution, and evaluations
   at equal accuracy (log-log interpolation of each work-precision curve). Targets: no more
   evaluations than scipy at equal accuracy, wall time no worse than torchdiffeq.

Usage:
    python benchmarks/bench_solvers.py [--device cpu|cuda] [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings

import numpy as np
import torch

import solvers
from solvers import reference
from solvers.testing import TimeDependentODE


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, repeats):
    """Best wall time of `repeats` calls after one warm-up (best-of filters machine noise)."""
    fn()
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


# ---------------------------------------------------------------------------------------------
# 1. Euler-Maruyama per-step overhead
# ---------------------------------------------------------------------------------------------


class CheapOU:
    """dx = -x dt + 0.5 dW: the cheapest sensible drift, so the loop's overhead shows."""

    noise_type = "additive"

    def __init__(self, like):
        self.g = torch.full((1,) * like.ndim, 0.5, dtype=like.dtype, device=like.device)

    def drift(self, x, t):
        return -x

    def diffusion(self, x, t):
        return self.g


def hand_loop_naive(problem, x, ts, generator):
    """What one writes by hand: x += f dt + g * sqrt(dt) * randn."""
    times = ts.tolist()
    tt = ts.to(x)
    batch = x.shape[0]
    for i in range(len(times) - 1):
        dt = times[i + 1] - times[i]
        t = tt[i].expand(batch)
        x = x + problem.drift(x, t) * dt + problem.diffusion(x, t) * (
            torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * math.sqrt(abs(dt)))
    return x


def hand_loop_fused(problem, x, ts, generator):
    """The same loop written with fused kernels (add with alpha, addcmul, in-place normal)."""
    times = ts.tolist()
    tt = ts.to(x)
    batch = x.shape[0]
    for i in range(len(times) - 1):
        dt = times[i + 1] - times[i]
        t = tt[i].expand(batch)
        dw = torch.empty_like(x).normal_(0.0, math.sqrt(abs(dt)), generator=generator)
        x = torch.addcmul(torch.add(x, problem.drift(x, t), alpha=dt), problem.diffusion(x, t), dw)
    return x


class TorchsdeOU(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, g_val):
        super().__init__()
        self.g_val = g_val

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return self.g_val.expand_as(y)


def bench_em(device, quick, repeats):
    n_steps = 200 if quick else 1000
    rows = []
    for shape in [(10_000, 2), (16, 3, 32, 32)]:
        x0 = torch.randn(shape, device=device)
        p = CheapOU(x0)
        ts = solvers.uniform_grid(0.0, 1.0, n_steps, device=device)
        gen = torch.Generator(device=device)
        sde = TorchsdeOU(torch.full((1, 1), 0.5, device=device))
        y0 = x0.reshape(shape[0], -1)
        ts_sde = torch.tensor([0.0, 1.0], device=device)

        cases = {
            "hand-written loop": lambda: hand_loop_naive(p, x0, ts, gen.manual_seed(0)),
            "hand-written, fused kernels": lambda: hand_loop_fused(p, x0, ts, gen.manual_seed(0)),
            "solvers.integrate (EulerMaruyama)": lambda: solvers.integrate(
                p, x0, ts, solvers.EulerMaruyama(), noise=gen.manual_seed(0)),
            "  same, check_finite='step'": lambda: solvers.integrate(
                p, x0, ts, solvers.EulerMaruyama(), noise=gen.manual_seed(0), check_finite="step"),
            "  same, SeededNoise (per-sample seeds)": lambda: solvers.integrate(
                p, x0, ts, solvers.EulerMaruyama(), noise=solvers.SeededNoise(0)),
            "torchsde.sdeint (euler)": lambda: _torchsde_run(sde, y0, ts_sde, 1.0 / n_steps),
        }
        # Round-robin repeats (best of each): a change in machine load hits all methods alike.
        times = {name: math.inf for name in cases}
        for fn in cases.values():
            fn()
        sync(device)
        for rep in range(repeats):
            for name, fn in cases.items():
                if name.startswith("torchsde") and rep >= 2:
                    continue  # 10x slower; two runs suffice
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name] = min(times[name], (time.perf_counter() - t0) / n_steps * 1e6)
        hand = times["hand-written loop"]
        for name, us in times.items():
            rows.append({"shape": "x".join(map(str, shape)), "method": name, "us_per_step": us,
                         "vs_hand": us / hand, "vs_torchsde": times["torchsde.sdeint (euler)"] / us})
    return rows, n_steps


def _torchsde_run(sde, y0, ts, dt):
    import torchsde

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchsde.sdeint(sde, y0, ts, dt=dt, method="euler")


# ---------------------------------------------------------------------------------------------
# 2. Dormand-Prince
# ---------------------------------------------------------------------------------------------


def bench_dopri(device, quick, repeats):
    import torchdiffeq

    problem = TimeDependentODE(omega=8.0)
    t1 = 4.0
    tols = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8] if not quick else [1e-3, 1e-5, 1e-7]
    results = []
    for batch in (1, 1024):
        g = torch.Generator().manual_seed(0)
        x0 = (0.5 + torch.rand(batch, 2, generator=g, dtype=torch.float64)).to(device)
        exact = problem.exact(x0, 0.0, t1)

        counter = {"n": 0}

        def tdq_f(t, y):
            counter["n"] += 1
            return problem.vector_field(y, t.expand(y.shape[0]))

        for tol in tols:
            entries = {}
            if batch == 1:
                out = {}
                wall = best_time(lambda: out.update(r=reference.scipy_solve(problem, x0, [0.0, t1], method="RK45",
                                                                              rtol=tol, atol=tol)), device, repeats)
                entries["scipy RK45"] = (out["r"].nfe, wall, (out["r"].ys[-1] - exact).abs().max().item())
            out = {}

            def run_tdq():
                counter["n"] = 0
                out["y"] = torchdiffeq.odeint(tdq_f, x0, torch.tensor([0.0, t1], dtype=torch.float64, device=device),
                                              rtol=tol, atol=tol, method="dopri5")[-1]
                out["n"] = counter["n"]
            wall = best_time(run_tdq, device, repeats)
            entries["torchdiffeq dopri5"] = (out["n"], wall, (out["y"] - exact).abs().max().item())
            for name, solver in (("solvers.Dopri5", solvers.Dopri5(rtol=tol, atol=tol)),
                                 ("solvers.Dopri5 (I controller)",
                                  solvers.Dopri5(rtol=tol, atol=tol, controller=solvers.PIController(beta=0.0))),
                                 ("solvers.Dopri5 per_sample", solvers.Dopri5(rtol=tol, atol=tol, per_sample=True))):
                if batch == 1 and "per_sample" in name:
                    continue
                wall = best_time(lambda: out.update(s=solvers.integrate(problem, x0, [0.0, t1], solver)), device,
                                 repeats)
                entries[name] = (out["s"].nfe, wall, (out["s"].x - exact).abs().max().item())
            for name, (nfe, wall, err) in entries.items():
                results.append({"batch": batch, "tol": tol, "method": name, "nfe": nfe, "wall_ms": wall * 1e3,
                                "error": err})
    return results


def equal_accuracy_ratio(results, batch, ours, theirs, key="nfe"):
    """Geometric mean over our tolerance sweep of ours[key] / theirs[key] at the same error
    (theirs interpolated log-log along its own work-precision curve)."""
    mine = [r for r in results if r["batch"] == batch and r["method"] == ours]
    other = sorted((r for r in results if r["batch"] == batch and r["method"] == theirs), key=lambda r: r["error"])
    if not mine or len(other) < 2:
        return float("nan")
    e = np.log([r["error"] for r in other])
    v = np.log([r[key] for r in other])
    ratios = [r[key] / math.exp(np.interp(math.log(r["error"]), e, v)) for r in mine
              if e.min() <= math.log(r["error"]) <= e.max()]
    return float(np.exp(np.mean(np.log(ratios)))) if ratios else float("nan")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer steps, tolerances and repeats")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    os.makedirs(args.out, exist_ok=True)
    env = (f"torch {torch.__version__}, device {device}"
           + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
              f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"))
    print(f"# solvers benchmark — {env}\n")

    em, n_steps = bench_em(device, args.quick, repeats)
    print(f"## Euler-Maruyama, {n_steps} steps, cheap drift (best of {repeats})\n")
    print("| batch | method | µs / step | vs hand-written | torchsde / this |")
    print("|---|---|---:|---:|---:|")
    for r in em:
        print(f"| {r['shape']} | {r['method']} | {r['us_per_step']:.1f} | {r['vs_hand']:.2f}x | {r['vs_torchsde']:.1f}x |")

    dp = bench_dopri(device, args.quick, repeats)
    print("\n## Dormand-Prince 5(4), TimeDependentODE(omega=8) on [0, 4], rtol = atol = tol\n")
    print("| batch | tol | method | nfe | wall (ms) | max error |")
    print("|---|---:|---|---:|---:|---:|")
    for r in dp:
        print(f"| {r['batch']} | {r['tol']:.0e} | {r['method']} | {r['nfe']} | {r['wall_ms']:.2f} | {r['error']:.1e} |")
    summary = {
        "nfe vs scipy at equal accuracy (B=1)": equal_accuracy_ratio(dp, 1, "solvers.Dopri5", "scipy RK45"),
        "wall vs torchdiffeq at equal accuracy (B=1)": equal_accuracy_ratio(dp, 1, "solvers.Dopri5",
                                                                            "torchdiffeq dopri5", "wall_ms"),
        "wall vs torchdiffeq at equal accuracy (B=1024)": equal_accuracy_ratio(dp, 1024, "solvers.Dopri5",
                                                                               "torchdiffeq dopri5", "wall_ms"),
    }
    for batch in (1, 1024):
        ours = {r["tol"]: r for r in dp if r["batch"] == batch and r["method"] == "solvers.Dopri5"}
        tdq = {r["tol"]: r for r in dp if r["batch"] == batch and r["method"] == "torchdiffeq dopri5"}
        summary[f"wall vs torchdiffeq at equal tol (B={batch}, geometric mean)"] = float(np.exp(np.mean(
            [math.log(ours[t]["wall_ms"] / tdq[t]["wall_ms"]) for t in ours])))
    print("\n| summary (ratio, ours / theirs; < 1 is better) | value |")
    print("|---|---:|")
    for k, v in summary.items():
        print(f"| {k} | {v:.2f} |")

    with open(os.path.join(args.out, f"bench_solvers_{device.type}.json"), "w") as fh:
        json.dump({"env": env, "euler_maruyama": em, "dopri5": dp, "summary": summary}, fh, indent=1)
    _plot(em, dp, os.path.join(args.out, f"bench_solvers_{device.type}.png"), env)
    print(f"\nsaved {args.out}/bench_solvers_{device.type}.png and .json")


def _plot(em, dp, path, env):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    shapes = sorted({r["shape"] for r in em})
    methods = [m for m in dict.fromkeys(r["method"] for r in em)]
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        vals = [next(r["us_per_step"] for r in em if r["shape"] == s and r["method"] == m) for s in shapes]
        axes[0].bar(np.arange(len(shapes)) + j * width, vals, width, label=m.strip())
    axes[0].set_xticks(np.arange(len(shapes)) + 0.4 - width / 2, shapes)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("µs per step")
    axes[0].set_title("Euler-Maruyama per-step cost")
    axes[0].legend(fontsize=7)
    for ax, key, label in ((axes[1], "nfe", "function evaluations"), (axes[2], "wall_ms", "wall time (ms)")):
        for batch, style in ((1, "-o"), (1024, "--s")):
            for m in dict.fromkeys(r["method"] for r in dp if r["batch"] == batch):
                pts = [(r[key], r["error"]) for r in dp if r["batch"] == batch and r["method"] == m]
                ax.loglog(*zip(*pts), style, label=f"{m} (B={batch})", markersize=4)
        ax.set_xlabel(label)
        ax.set_ylabel("max error at t=4")
        ax.set_title(f"Dopri5 work-precision: {label}")
        ax.legend(fontsize=6)
    fig.suptitle(env, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
