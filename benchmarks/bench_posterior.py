"""Posterior sampling for inverse problems (DPS, PiGDM, MMPS) measured against exact posteriors.

The prior is a Gaussian mixture with exact diffused scores; the measurement is linear-Gaussian,
y = A x0 + n, so the posterior is again a Gaussian mixture in closed form
(`GaussianMixture.posterior`). For each measurement, method and sampler:

* mode-weight TV: 0.5 sum_k |mean_x p(k | x, y) - w'_k|, with p(k | x, y) the exact posterior's
  responsibilities (for exact posterior samples its expectation is exactly w'_k, so the
  "exact" rows show the Monte-Carlo floor);
* mean error: |mean(x) - E[x0 | y]| (Euclidean);
* spread error: the weight-averaged relative error of each mode's spread
  sqrt(E ||x - m'_k||^2) (samples weighted by responsibility) against sqrt(tr C'_k);
* residual: RMS ||y - A x|| of the samples over the exact posterior's sqrt(E ||y - A x0||^2);
* forward passes and vector-Jacobian products per step, and wall time.

The rows "exact" run the same sampler on the exact posterior score: what is left there is
the sampler's error, the rest is the method's.

Measurements: `projection` (2-D ring of 8 modes, y = x_1 + n, splitting modes), `inpaint`
(8-D ring, three coordinates observed), `small-noise` (2-D ring, y = (x_1 + x_2)/sqrt 2,
noise 0.01), `blur-32` (32-D ring, a 3-tap circular blur then every second coordinate, given
to the methods as callables A(x), A^T(v)).

Usage: python benchmarks/bench_posterior.py [--out benchmarks/results] [--device cpu] [--quick]
Prints Markdown tables and saves bench_posterior.png and bench_posterior.json to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from scoresde import VPSDE, Ancestral, DPMSolverPP, GaussianMixture, LinearMeasurement, posterior_score, sample

F64 = torch.float64


class Counted:
    """A score callable that counts its forward passes."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def blur_operator(D):
    """3-tap circular blur (0.25, 0.5, 0.25) then every second coordinate: callables and the matrix."""

    def A(x):
        b = 0.5 * x + 0.25 * (torch.roll(x, 1, dims=1) + torch.roll(x, -1, dims=1))
        return b[:, ::2]

    def AT(v):
        up = torch.zeros(v.shape[0], D, dtype=v.dtype, device=v.device)
        up[:, ::2] = v
        return 0.5 * up + 0.25 * (torch.roll(up, 1, dims=1) + torch.roll(up, -1, dims=1))

    matrix = A(torch.eye(D, dtype=F64)).T.contiguous()  # rows: A applied to the basis vectors, transposed
    return A, AT, matrix


def problems():
    g = torch.Generator().manual_seed(0)
    out = []
    ring2 = GaussianMixture.ring(8, radius=4.0, std=0.4)
    out.append(dict(name="projection", prior=ring2, A=torch.tensor([[1.0, 0.0]], dtype=F64),
                    y=torch.tensor([2.0], dtype=F64), noise=0.5, operator=False))
    ring8 = GaussianMixture.ring(8, radius=4.0, std=0.4, dim=8)
    A = torch.eye(8, dtype=F64)[[0, 3, 5]]
    x_true = ring8.sample(1, generator=g)[0]
    out.append(dict(name="inpaint", prior=ring8, A=A, y=A @ x_true + 0.05 * torch.randn(3, generator=g, dtype=F64),
                    noise=0.05, operator=False))
    A = torch.tensor([[1.0, 1.0]], dtype=F64) / math.sqrt(2)
    x_true = ring2.sample(1, generator=g)[0]
    out.append(dict(name="small-noise", prior=ring2, A=A, y=A @ x_true + 0.01 * torch.randn(1, generator=g, dtype=F64),
                    noise=0.01, operator=False))
    ring32 = GaussianMixture.ring(8, radius=4.0, std=0.4, dim=32)
    Af, ATf, M = blur_operator(32)
    x_true = ring32.sample(1, generator=g)[0]
    out.append(dict(name="blur-32", prior=ring32, A=M, y=M @ x_true + 0.1 * torch.randn(16, generator=g, dtype=F64),
                    noise=0.1, operator=(Af, ATf)))
    return out


METHODS = [
    ("dps", dict(method="dps")),
    ("dps zeta=1", dict(method="dps", zeta=1.0)),
    ("pigdm", dict(method="pigdm")),
    ("mmps cg=1", dict(method="mmps", cg_iters=1)),
    ("mmps cg=3", dict(method="mmps", cg_iters=3)),
]
VJPS = {"dps": 1, "dps zeta=1": 1, "pigdm": 1, "mmps cg=1": 2, "mmps cg=3": 4, "exact": 0}


def metrics(x, post, A, y):
    x = x.to(F64)
    r = post.responsibilities(x)  # (n, K)
    tv = 0.5 * (r.mean(0) - post.weights).abs().sum().item()
    mean_err = (x.mean(0) - post.mean()).norm().item()
    spreads = []
    for k in range(post.K):
        if post.weights[k] < 0.05:
            continue
        wk = r[:, k]
        got = ((wk * ((x - post.means[k]) ** 2).sum(1)).sum() / wk.sum()).sqrt()
        want = torch.diagonal(post.covariances[k]).sum().sqrt()
        spreads.append((post.weights[k].item(), abs(got / want - 1).item()))
    spread_err = sum(w * e for w, e in spreads) / sum(w for w, _ in spreads)
    res = ((y - x @ A.T) ** 2).sum(1).mean().sqrt().item()
    # exact E||y - A x0||^2 = sum_k w_k (||y - A m_k||^2 + tr(A C_k A^T))
    want = (post.weights * (((y - post.means @ A.T) ** 2).sum(1)
                            + torch.einsum("md,kde,me->k", A, post.covariances, A))).sum().sqrt().item()
    return dict(tv=tv, mean_err=mean_err, spread_err=spread_err, residual_ratio=res / want)


def run(args):
    device = torch.device(args.device)
    sde = VPSDE()
    n = 1000 if args.quick else 4000
    samplers = [("ancestral", Ancestral(), 100 if args.quick else 200), ("dpm++2m", DPMSolverPP(), 25 if args.quick else 50)]
    rows, keep = [], {}
    for prob in problems():
        prior, A, y, noise = prob["prior"], prob["A"], prob["y"], prob["noise"]
        post = prior.posterior(A, y, noise)
        D = prior.dim
        if prob["operator"]:
            Af, ATf = prob["operator"]
            meas = LinearMeasurement(Af, y.to(device), noise, AT=ATf)
        else:
            meas = LinearMeasurement(A.to(device), y.to(device), noise)
        exact_prior = prior.diffused(sde)
        x_direct = post.sample(n, generator=torch.Generator().manual_seed(1))
        rows.append(dict(problem=prob["name"], sampler="direct", method="exact samples", **metrics(x_direct, post, A, y),
                         forward_per_step=0, vjp_per_step=0, wall_s=0.0))
        for sname, sampler, steps in samplers:
            for mname, kw in [("exact", None)] + METHODS:
                base = Counted(post.diffused(sde).score if kw is None else exact_prior.score)
                score = base if kw is None else posterior_score(base, sde, meas, **kw)
                t0 = time.perf_counter()
                try:
                    with torch.no_grad():
                        x = sample(sde, score, (n, D), sampler=sampler, steps=steps, generator=torch.Generator(device).manual_seed(2),
                                   device=device, dtype=F64, denoise=False)  # the samplers' own steps, as measured
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    m = metrics(x.cpu(), post, A, y) if bool(torch.isfinite(x).all()) else None
                except (ValueError, RuntimeError) as err:  # a diverged run is reported, not hidden
                    m, x = None, None
                    print(f"  {prob['name']} {sname} {mname}: {str(err).splitlines()[0][:100]}")
                wall = time.perf_counter() - t0
                row = dict(problem=prob["name"], sampler=sname, method=mname, steps=steps,
                           forward_per_step=base.calls / steps, vjp_per_step=VJPS[mname], wall_s=wall)
                row.update(m if m is not None else dict(tv=float("nan"), mean_err=float("nan"), spread_err=float("nan"),
                                                       residual_ratio=float("nan")))
                rows.append(row)
                if prob["name"] == "projection" and sname == "ancestral" and x is not None:
                    keep[mname] = x.cpu()
        keep.setdefault("_posterior", post)
    return rows, keep


def table(rows):
    print("| measurement | sampler | method | mode TV | mean error | spread error | residual / exact | forward + VJP per step | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['sampler']} | {r['method']} | {r['tv']:.3f} | {r['mean_err']:.3f} | {r['spread_err']:.3f} |"
              f" {r['residual_ratio']:.2f} | {r['forward_per_step']:.0f} + {r['vjp_per_step']} | {r['wall_s']:.2f} |")


def plot(rows, keep, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    post = keep.pop("_posterior")
    names = ["exact", "dps", "pigdm", "mmps cg=3"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 4))
    u = torch.linspace(-6, 6, 200, dtype=F64)
    X = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    dens = post.log_prob(X).exp().reshape(200, 200)
    for ax, name in zip(axes, names):
        ax.contour(u, u, dens, levels=6, colors="k", linewidths=0.6)
        if name in keep:
            ax.scatter(keep[name][:, 0], keep[name][:, 1], s=1, alpha=0.3)
        ax.set_title(f"projection, {name}")
        ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal")
    ax = axes[-1]
    probs = sorted({r["problem"] for r in rows}, key=[r["problem"] for r in rows].index)
    methods = ["exact"] + [m for m, _ in METHODS]
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        vals = [next((r["tv"] for r in rows if r["problem"] == p and r["method"] == m and r["sampler"] == "ancestral"), float("nan"))
                for p in probs]
        ax.bar([i + j * width for i in range(len(probs))], vals, width, label=m)
    ax.set_xticks([i + 0.4 for i in range(len(probs))], probs, rotation=20)
    ax.set_ylabel("mode-weight TV (ancestral)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "bench_posterior.png", dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 samples, half the steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, keep = run(args)
    table(rows)
    plot(rows, keep, args.out)
    (args.out / "bench_posterior.json").write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=1))
    print(f"\nwrote {args.out / 'bench_posterior.png'} and {args.out / 'bench_posterior.json'}")


if __name__ == "__main__":
    main()
