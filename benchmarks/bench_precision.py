"""What a float16 or bfloat16 state costs each sampler on exact scores (not a test: prints a table, saves JSON and a plot).

The data is the ring of 8 Gaussian components (radius 4, std 0.25, weights 1, 2, 1, 3, 1, 2, 1, 3)
diffused by the VP SDE (the VE SDE for annealed Langevin dynamics), whose noised scores are
exact, so every difference between precisions is rounding. Each sampler runs from the same
prior draw with the same noise seed in float64, float32, bfloat16 and float16 (the score is
evaluated in the state's dtype, as a half-precision network would be) and ends with Tweedie's
denoiser. Measures, per dtype:

* `TV`: total variation between the share of samples nearest each mode and the true weights
  (its float64 value is the sampler's own error plus the sample size's floor);
* `spread`: relative error of the within-mode RMS deviation (per coordinate) against 0.25;
* `med dist`: the median distance of a sample to the same sample of the float64 run;
* `changed`: share of samples that end nearest another mode than in the float64 run;
* `s`: wall time of the run (on the CPU, half precision is emulated and slower; on an
  accelerator it is the point of using it).

Run: `python benchmarks/bench_precision.py [--quick] [--device cuda] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import solvers
import torch
from torch import Tensor

import scoresde
from scoresde import (
    DDIM,
    VESDE,
    VPSDE,
    Ancestral,
    AnnealedLangevin,
    DPMSolverPP,
    EDMHeun,
    GaussianMixture,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    UniPC,
)
from scoresde.samplers import (
    DEIS,
    IPNDM,
    DPMSolverAdaptive,
    DPMSolverPPSDE,
    DPMSolverSinglestep,
    PNDM,
    ProbabilityFlowSampler,
    ReverseSDESampler,
    SASolver,
)

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STD = 0.25


def samplers(quick: bool):
    """(name, sampler, steps): every sampler at a typical budget; --quick keeps one per family."""
    rows = [
        ("DDIM", DDIM(), 20),
        ("DDIM eta=1", DDIM(eta=1.0), 40),
        ("EDMHeun", EDMHeun(), 10),
        ("EDMHeun churn=10", EDMHeun(churn=10.0), 10),
        ("DPM++ 2M", DPMSolverPP(), 20),
        ("DPM++ 3M", DPMSolverPP(order=3), 20),
        ("SDE-DPM++ 2M", DPMSolverPP(eta=1.0), 20),
        ("UniPC-2", UniPC(), 20),
        ("UniPC-3", UniPC(order=3), 20),
        ("ReverseDiffusion", ReverseDiffusion(), 1000),
        ("Ancestral", Ancestral(), 1000),
        ("PC (noise norms)", PredictorCorrector(corrector=LangevinCorrector(norms="noise")), 500),
        ("Euler-Maruyama", ReverseSDESampler(), 1000),
        ("ProbabilityFlowSampler Heun", ProbabilityFlowSampler(), 20),
        ("ProbabilityFlowSampler Dopri5", ProbabilityFlowSampler(solvers.Dopri5(1e-4, 1e-4)), None),
        ("AnnealedLangevin", AnnealedLangevin(n_steps_each=5), 100),
        ("DPM singlestep 3S", DPMSolverSinglestep(order=3), 20),
        ("DEIS-3", DEIS(), 20),
        ("iPNDM", IPNDM(), 20),
        ("DPM++ SDE", DPMSolverPPSDE(), 10),
        ("SA-Solver", SASolver(), 20),
        ("DPM adaptive 23", DPMSolverAdaptive(), None),
        ("PNDM", PNDM(), 20),
    ]
    if quick:
        keep = {"DDIM", "DPM++ 2M", "UniPC-3", "Ancestral", "DPM++ SDE", "SA-Solver"}
        rows = [(n, s, 100 if n == "Ancestral" else k) for n, s, k in rows if n in keep]
    return rows


def measure(x: Tensor, ref: Tensor, mix: GaussianMixture) -> dict:
    x = x.double().cpu()
    k = torch.cdist(x, mix.means).argmin(1)
    share = torch.bincount(k, minlength=mix.means.shape[0]).double() / x.shape[0]
    out = {
        "TV": 0.5 * (share - mix.weights).abs().sum().item(),
        "spread": (x - mix.means[k]).pow(2).mean().sqrt().item() / STD - 1,
    }
    if ref is not None:
        k_ref = torch.cdist(ref, mix.means).argmin(1)
        out["med dist"] = (x - ref).norm(dim=1).median().item()
        out["changed"] = (k != k_ref).double().mean().item()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 samples, six samplers, 100-step SDE samplers")
    ap.add_argument("--samples", type=int, default=None, help="samples per run (default 20,000; quick 2,000)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.samples or (2000 if args.quick else 20000)
    device = torch.device(args.device)
    mix = GaussianMixture.ring(8, radius=4.0, std=STD, weights=[1, 2, 1, 3, 1, 2, 1, 3])
    rows = []
    header = f"{'sampler':24s} {'steps':>5s} " + " ".join(f"{d:>8s} TV spread  dist  chg    s" for d in DTYPES)
    print(f"VP SDE, ring of 8 (std {STD}), {n} samples, exact scores; per dtype: TV, spread error, median distance"
          " to the float64 run, share of changed modes, seconds")
    print(header)
    for name, sampler, steps in samplers(args.quick):
        sde = VESDE(sigma_min=0.01, sigma_max=20.0) if isinstance(sampler, AnnealedLangevin) else VPSDE()
        score = mix.diffused(sde).score
        ref, cells, row = None, [], {"sampler": name, "steps": steps}
        for dname, dtype in DTYPES.items():
            t0 = time.perf_counter()
            x = scoresde.sample(sde, score, (n, 2), sampler=sampler, steps=steps, generator=3, denoise=True,
                                dtype=dtype, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            m = measure(x, ref, mix)
            m["seconds"], m["finite"] = seconds, bool(torch.isfinite(x).all())
            if dtype == torch.float64:
                ref = x.double().cpu()
            row[dname] = m
            cells.append(f"{m['TV']:.4f} {m['spread']:+.3f} {m.get('med dist', 0):.0e} {m.get('changed', 0):.3f}"
                         f" {seconds:4.1f}")
        rows.append(row)
        print(f"{name:24s} {str(steps):>5s} " + " ".join(f"{c:>30s}" for c in cells), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_precision.json").write_text(json.dumps({"samples": n, "device": str(device), "rows": rows},
                                                              indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\nwrote {args.out / 'bench_precision.json'} (no matplotlib: no plot)")
        return
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.5))
    names = [r["sampler"] for r in rows]
    for j, dname in enumerate(DTYPES):
        vals = [abs(r[dname]["spread"] - r["float64"]["spread"]) for r in rows]
        ax.barh([i + 0.2 * j for i in range(len(rows))], vals, height=0.2, label=dname)
    ax.set_yticks([i + 0.3 for i in range(len(rows))], names)
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xlabel("|spread error - spread error in float64|")
    ax.legend()
    fig.savefig(args.out / "bench_precision.png", dpi=110, bbox_inches="tight")
    print(f"\nwrote {args.out / 'bench_precision.png'} and {args.out / 'bench_precision.json'}")


if __name__ == "__main__":
    main()
