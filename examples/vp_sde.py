"""The VP SDE (DDPM's continuous limit) on scikit-learn's 8x8 digits, sampled four ways.

$dx = -\\tfrac12\\beta(t)x\\,dt + \\sqrt{\\beta(t)}\\,dw$ with Song et al.'s linear
$\\beta(t) = 0.1 + 19.9t$: its discretisation with 1000 steps is Ho et al.'s DDPM chain
(`VPSDE().discretize(1000)`, betas 1e-4 ... 0.02). A U-Net predicting the noise is
trained with the continuous-time eps-loss (`DSMLoss()`, $\\lambda(t) = \\sigma_t^2$, the
continuous form of DDPM's simple loss) and sampled with DDPM's ancestral sampler, the
reverse SDE (Euler-Maruyama), DDIM (the probability-flow ODE) and DPM-Solver++(2M).
Run (a few minutes on a laptop CPU):

    python examples/vp_sde.py --out out/vp_sde

It writes `samples.png` and `loss.png`.

References: Ho, Jain, Abbeel, NeurIPS 2020; Song et al., ICLR 2021, eq. (11).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from scoresde import DDIM, VPSDE, Ancestral, DPMSolverPP, DSMLoss, ReverseDiffusion  # noqa: E402


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0], steps=2000, out="out/vp_sde")
    args = p.parse_args(argv)
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    chain = sde.discretize(1000)
    print(f"VPSDE().discretize(1000): {chain!r} (Ho et al.'s betas)")
    samplers = {
        "DDPM ancestral, 1000 steps": (Ancestral(), 1000, {}),
        "reverse SDE (Euler-Maruyama), 500 steps": (ReverseDiffusion(), 500, {}),
        "DDIM, 50 steps": (DDIM(), 50, {}),
        "DPM-Solver++(2M), 20 steps": (DPMSolverPP(order=2), 20, {}),
    }
    return C.run_digits(args, sde, "VP SDE", DSMLoss(), "eps", samplers)


if __name__ == "__main__":
    main()
