"""Shared helpers for the solver tests."""

from __future__ import annotations

import math

import numpy as np
import torch

import solvers
from solvers.noise import NoiseSource


def fitted_slope(hs, errs) -> float:
    """Least-squares slope of log(err) against log(h)."""
    return float(np.polyfit(np.log(np.asarray(hs, dtype=float)), np.log(np.asarray(errs, dtype=float)), 1)[0])


class RecordingNoise(NoiseSource):
    """Wraps a noise source and records every increment it hands out (for coupled references)."""

    def __init__(self, inner: NoiseSource):
        self.inner = inner
        self.record: list = []

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        fn = self.inner.bind(shape, dtype, device, levy_area=levy_area, span=span)

        def increment(t_cur, t_next):
            out = fn(t_cur, t_next)
            self.record.append((t_next - t_cur, out))
            return out
        return increment


class ReflectedNoise(NoiseSource):
    """The path s -> W(-s) of another source: increments over [s_a, s_b] are W(-s_b) - W(-s_a)."""

    def __init__(self, inner: NoiseSource):
        self.inner = inner

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        fn = self.inner.bind(shape, dtype, device, levy_area=levy_area,
                             span=None if span is None else (-span[1], -span[0]))

        def increment(s_cur, s_next):
            out = fn(-s_cur, -s_next)
            if levy_area:  # Z in s: the signed integral flips sign with the time variable
                return out[0], -out[1]
            return out
        return increment


def ou_exact_transition_coefficients(theta: float, h: float):
    r"""Coefficients `(a, b, c)` with $\int_0^h e^{-\theta(h-u)} dW_u = a\,\Delta W + b\,\Delta Z + c\,\eta$
    in law, jointly with $(\Delta W, \Delta Z)$, $\eta \sim N(0, 1)$ independent (Gaussian regression).
    """
    h = abs(h)
    e1 = math.exp(-theta * h)
    var_i = (1 - e1 * e1) / (2 * theta)
    cov = np.array([(1 - e1) / theta, (1 - e1 * (1 + theta * h)) / theta ** 2])
    # Cov of (dW, dZ) where dZ = int_0^h (h - u) dW_u
    sig = np.array([[h, h * h / 2], [h * h / 2, h ** 3 / 3]])
    coef = np.linalg.solve(sig, cov)
    resid = max(var_i - cov @ coef, 0.0)
    return float(coef[0]), float(coef[1]), math.sqrt(resid)


def ou_coupled_exact(ou, x0: torch.Tensor, record, generator: torch.Generator) -> torch.Tensor:
    """The OU solution at the end of the recorded grid, exact in law and coupled with the recorded
    increments `(dt, dW)` or `(dt, (dW, dZ))` (dZ drawn from its conditional law when absent)."""
    x = x0.double()
    for dt, inc in record:
        h = abs(dt)
        if isinstance(inc, tuple):
            dw, dz = inc[0].double(), inc[1].double()
        else:
            dw = inc.double()
            xi = torch.randn(dw.shape, dtype=torch.float64, generator=generator)
            dz = h * (0.5 * dw + math.sqrt(h / 12) * xi)
        a, b, c = ou_exact_transition_coefficients(ou.theta, h)
        eta = torch.randn(dw.shape, dtype=torch.float64, generator=generator)
        x = ou.mu + math.exp(-ou.theta * h) * (x - ou.mu) + ou.sigma * (a * dw + b * dz + c * eta)
    return x


def tree_increments(tree: solvers.BrownianTree, like: torch.Tensor, ts):
    """Per-interval (dt, dW, dZ) of a Brownian tree on a grid."""
    fn = tree.bind(like.shape, torch.float64, like.device, levy_area=tree.levy_area)
    out = []
    for a, b in zip(ts[:-1], ts[1:]):
        inc = fn(a, b)
        out.append((b - a, *(inc if isinstance(inc, tuple) else (inc, None))))
    return out
