"""Quality of trained models: 2-D toy sets against held-out data, class-conditional digits against a classifier.

Two measurements, each printed as a table and saved (JSON and PNG) under `--out`:

1. **2-D toy data.** For each SDE (VP, sub-VP, VE) an MLP is trained on 20 000 points of a
   toy set exactly as in `examples/train_2d.py`, and 10 000 samples per sampler are compared
   with sets of 10 000 fresh held-out points by the sliced Wasserstein-2 distance (512
   directions), averaged over 5 sets. The *noise floor* is the same distance between two
   independent held-out sets, averaged over 5 pairs: what a perfect model would score.
   Every set is i.i.d. (two moons included, see `_common.two_moons`). Target: within 2x
   the floor. Two more rows sample with 10 evaluations (UniPC-3), on the log-SNR grid and on
   a grid fitted to the trained model by `scoresde.samplers.fit_grid` (2000 other prior draws), with
   their RMS distance to the model's own probability flow from the same noise; that flow
   (a tight Dormand-Prince solve) is a row too: what an exact ODE sampler of this model scores.
2. **Digits.** A class-conditional U-Net is trained with condition dropout exactly as in
   `examples/conditional_digits.py` on 1500 digits. An RBF SVM trained on the same 1500
   real digits (its accuracy on the 297 held-out digits is printed) labels 50 samples per
   class at each guidance scale; the share labelled as the requested class should rise with
   the scale and reach 90% at scale 3. Memorisation shows in the distance from each sample
   to its nearest training digit, printed next to the same distance for the held-out real
   digits (a copying model would sit far below it).

Run (several minutes on a CPU; seconds of GPU time per model on a GPU):

    python benchmarks/bench_training.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402

import _common as C  # noqa: E402
import conditional_digits  # noqa: E402
import train_2d  # noqa: E402
import train_digits  # noqa: E402
import scoresde  # noqa: E402
import solvers  # noqa: E402
from scoresde import DPMSolverPP, ReverseDiffusion, UniPC  # noqa: E402
from scoresde.time_grids import UniformLogSNR  # noqa: E402
from scoresde.samplers import ProbabilityFlowSampler, fit_grid  # noqa: E402

#: the few-step rows: UniPC-3 with 9 steps and the final denoising (10 evaluations), on the
#: log-SNR grid and on a grid fitted to the trained model with `fit_grid` on other prior draws
FEW_STEPS, PILOT = 9, 2000
FLOW = "probability flow, Dopri5"  # the model's own ODE solved tightly: what an exact ODE sampler scores


def bench_2d(data_name: str, steps: int, n: int, device, seed: int, pairs: int) -> list[dict]:
    data = C.toy_data(data_name, 20_000, seed)
    held_out = C.HeldOut(data_name, n, seed, pairs)
    samplers = {"reverse SDE, 1000 steps": (ReverseDiffusion(), 1000), "DPM-Solver++(2M), 50 steps": (DPMSolverPP(order=2), 50)}
    rows = []
    for sde_name in C.SDE_NAMES:
        t0 = time.perf_counter()
        sde, model, history = train_2d.train(sde_name, data, steps, device, seed, progress=False)
        seconds = time.perf_counter() - t0
        draws = {title: C.draw(sde, model, (n, 2), sampler, k, seed, device) for title, (sampler, k) in samplers.items()}
        # 10 evaluations: distance to the model's own probability flow (Dormand-Prince) from the same x_T
        gen = torch.Generator().manual_seed(seed + 1)
        x_T = (torch.randn(n, 2, generator=gen) * sde.prior_std).to(device)
        pilot = (torch.randn(PILOT, 2, generator=gen) * sde.prior_std).to(device)
        evals = []
        flow = scoresde.sample(sde, model, sampler=ProbabilityFlowSampler(solvers.Dopri5(1e-6, 1e-6)), x_init=x_T,
                               denoise=True, callback=lambda info: evals.append(info.nfe))
        flow_nfe = evals[-1] + 1
        t1 = time.perf_counter()
        fitted = fit_grid(sde, model, UniPC(order=3), FEW_STEPS, pilot)
        fit_s = time.perf_counter() - t1
        rms = {}
        draws[FLOW] = flow
        for title, grid in ((f"UniPC-3, {FEW_STEPS + 1} NFE, log-SNR", UniformLogSNR()),
                            (f"UniPC-3, {FEW_STEPS + 1} NFE, fitted grid", fitted)):
            x = scoresde.sample(sde, model, sampler=UniPC(order=3), steps=FEW_STEPS, grid=grid, x_init=x_T, denoise=True)
            draws[title], rms[title] = x, (x - flow).pow(2).sum(1).mean().sqrt().item()
        for title, x in draws.items():
            w, floor = held_out.distance(x), held_out.floor
            rows.append(dict(data=data_name, sde=C.SDE_TITLES[sde_name], sampler=title, sw2=w, floor=floor,
                             floor_std=held_out.floor_std, ratio=w / floor, train_s=seconds,
                             final_loss=statistics.mean(history.losses[-100:]), rms_to_flow=rms.get(title),
                             fit_s=fit_s if "fitted" in title else None, nfe=flow_nfe if title == FLOW else None))
            extra = f"  RMS to the model's flow {rms[title]:.4f}" if title in rms else ""
            extra += f"  ({flow_nfe} NFE)" if title == FLOW else ""
            print(f"  {data_name:9s} {C.SDE_TITLES[sde_name]:7s} {title:30s} SW2 {w:.4f}  floor {floor:.4f}"
                  f" (sd {held_out.floor_std:.4f})  ratio {w / floor:.2f}  {'ok' if w <= 2 * floor else 'ABOVE 2x'}"
                  f"{extra}  (trained in {seconds:.0f} s{f', grid fitted in {fit_s:.0f} s' if 'fitted' in title else ''})",
                  flush=True)
    return rows


def bench_digits(steps: int, per_class: int, device, seed: int, scales: list[float]) -> dict:
    (x, y), (x_test, y_test) = C.split_digits(seed)
    clf = C.digit_classifier(x, y)
    clf_acc = (C.classify(clf, x_test) == y_test).float().mean().item()
    t0 = time.perf_counter()
    sde, model, history = train_digits.train("vp", x, steps, device, seed, progress=False, labels=y, label_dropout=0.15)
    seconds = time.perf_counter() - t0
    real_nn = C.nearest_distance(x_test, x)
    out = {"classifier_accuracy": clf_acc, "train_s": seconds, "real_nn_mean": real_nn.mean().item(),
           "real_nn_median": real_nn.median().item(), "scales": {}}
    print(f"  classifier accuracy on held-out real digits: {clf_acc:.3f}; trained {steps} steps in {seconds:.0f} s")
    print(f"  distance to nearest training digit, held-out real digits: mean {real_nn.mean():.3f}, median {real_nn.median():.3f},"
          f" min {real_nn.min():.3f}")
    samples_by_scale = {}
    for w in scales:
        samples, labels = conditional_digits.guided_samples(model, sde, w, per_class, 25, seed, device)
        pred = C.classify(clf, samples)
        acc = (pred == labels.cpu()).float().mean().item()
        nn_d = C.nearest_distance(samples, x)
        out["scales"][w] = {"accuracy": acc, "nn_mean": nn_d.mean().item(), "nn_median": nn_d.median().item(),
                            "nn_min": nn_d.min().item(), "per_class": [
                                (pred[labels.cpu() == c] == c).float().mean().item() for c in range(10)]}
        shown = samples.reshape(10, per_class, *samples.shape[1:])[:, :10].flatten(0, 1)  # 10 per class, rows = classes
        samples_by_scale[f"scale {w:g}: {100 * acc:.0f}% classified as asked"] = shown
        print(f"  scale {w:g}: accuracy {acc:.3f}; nearest training digit: mean {nn_d.mean():.3f},"
              f" median {nn_d.median():.3f}, min {nn_d.min():.3f}", flush=True)
    return out, samples_by_scale


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training")
    p.add_argument("--part", choices=("2d", "digits", "all"), default="all")
    p.add_argument("--data", nargs="+", default=["moons", "ring"], choices=C.TOY_SETS)
    p.add_argument("--steps-2d", type=int, default=6000)
    p.add_argument("--steps-digits", type=int, default=4000)
    p.add_argument("--n", type=int, default=10_000, help="2-D samples per sampler (and points per held-out set)")
    p.add_argument("--pairs", type=int, default=5, help="pairs of held-out sets for the 2-D noise floor")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    device = C.device_of(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": str(device), "torch": torch.__version__}
    if args.part in ("2d", "all"):
        print(f"2-D toy data: sliced W2 of {args.n} samples to {args.pairs} sets of {args.n} held-out points"
              f" ({args.steps_2d} training steps)")
        results["2d"] = [row for d in args.data for row in bench_2d(d, args.steps_2d, args.n, device, args.seed, args.pairs)]
    if args.part in ("digits", "all"):
        print(f"class-conditional digits ({args.steps_digits} training steps, {args.per_class} samples per class)")
        results["digits"], panels = bench_digits(args.steps_digits, args.per_class, device, args.seed, args.scales)
        C.announce(C.image_panels(panels, args.out / "digits_cfg.png", nrow=min(10, args.per_class)))
    path = args.out / "bench_training.json"
    path.write_text(json.dumps(results, indent=1))
    C.announce(path)


if __name__ == "__main__":
    main()
