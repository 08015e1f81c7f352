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


def ou_conditional_moments(ou, x0: torch.Tensor, record):
    r"""Mean and variance of the exact OU solution at the end of a recorded grid, conditional on the
    recorded increments (`(dt, dW)` or `(dt, (dW, dZ))`).

    Over a step of length $h$, $x_{k+1} = \mu + e^{-\theta h}(x_k - \mu) + \sigma I$ with
    $I = \int_0^h e^{-\theta(h-u)} dW_u$; $(I, \Delta W, \Delta Z)$ are jointly Gaussian, so
    $I$ given the recorded increments is Gaussian with a mean linear in them (regression) and a
    fixed residual variance. Comparing a scheme with these conditional moments (instead of an
    independent exact simulation) estimates its weak error with the path noise removed.
    """
    theta = ou.theta
    mean = x0.double()
    var = torch.zeros_like(mean)
    for dt, inc in record:
        h = abs(dt)
        e1 = math.exp(-theta * h)
        var_i = (1 - e1 * e1) / (2 * theta)
        c_w = (1 - e1) / theta                          # Cov(I, dW)
        c_z = (1 - e1 * (1 + theta * h)) / theta ** 2   # Cov(I, dZ), dZ = int (h - u) dW_u
        if isinstance(inc, tuple):
            sig = np.array([[h, h * h / 2], [h * h / 2, h ** 3 / 3]])
            coef = np.linalg.solve(sig, np.array([c_w, c_z]))
            cond_mean = coef[0] * inc[0].double() + coef[1] * inc[1].double()
            resid = var_i - coef @ np.array([c_w, c_z])
        else:
            cond_mean = (c_w / h) * inc.double()
            resid = var_i - c_w * c_w / h
        mean = ou.mu + e1 * (mean - ou.mu) + ou.sigma * cond_mean
        var = e1 * e1 * var + ou.sigma ** 2 * max(resid, 0.0)
    return mean, var


def tree_increments(tree: solvers.BrownianTree, like: torch.Tensor, ts):
    """Per-interval (dt, dW, dZ) of a Brownian tree on a grid."""
    fn = tree.bind(like.shape, torch.float64, like.device, levy_area=tree.levy_area)
    out = []
    for a, b in zip(ts[:-1], ts[1:]):
        inc = fn(a, b)
        out.append((b - a, *(inc if isinstance(inc, tuple) else (inc, None))))
    return out
