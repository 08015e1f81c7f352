r"""Test problems with closed-form solutions (used by the test-suite and the benchmarks).

Each problem follows the `solvers` protocol and carries its exact solution, in the
spirit of torchdiffeq's `tests/problems.py`:

| problem | kind | exact |
|---|---|---|
| `LinearODE` | ODE $\dot x = A x$ | $x_0 e^{A(t - t_0)}$ |
| `LogisticODE` | ODE $\dot x = r x (1 - x)$ | logistic curve |
| `TimeDependentODE` | ODE $\dot x = \omega \cos(\omega t)\, x$ | $x_0 e^{\sin \omega t - \sin \omega t_0}$ |
| `StiffRelaxation` | ODE $\dot x = -\lambda_b (x - \cos t)$, one rate per sample | closed form |
| `OrnsteinUhlenbeck` | additive SDE $dx = \theta(\mu - x)dt + \sigma dW$ | moments; pathwise from $(\Delta W, \Delta Z)$ |
| `GeometricBrownianMotion` | multiplicative SDE $dx = \mu x\,dt + \sigma x\,dW$ | $x_0 e^{(\mu - \sigma^2/2)t + \sigma W_t}$ (Itô) |
| `GaussianTarget` | density for Langevin | score, log-density, ULA's biased variance |
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._utils import batch_view

__all__ = ["LinearODE", "LogisticODE", "TimeDependentODE", "StiffRelaxation", "OrnsteinUhlenbeck",
           "GeometricBrownianMotion", "GaussianTarget"]


def _col(t: Tensor, x: Tensor) -> Tensor:
    return batch_view(t, x.ndim)


class LinearODE:
    r"""$\dot x = A x$ for states `(B, d)`; exact solution $x(t) = e^{A (t - t_0)} x_0$.

    The default $A = [[-0.5, -2], [2, -0.5]]$ is a damped rotation.
    """

    def __init__(self, A: Tensor | None = None):
        self.A = torch.tensor([[-0.5, -2.0], [2.0, -0.5]], dtype=torch.float64) if A is None else A.double()

    def vector_field(self, x: Tensor, t: Tensor) -> Tensor:
        return x @ self.A.to(x).T

    def exact(self, x0: Tensor, t0: float, t: float) -> Tensor:
        m = torch.linalg.matrix_exp(self.A * (t - t0))
        return (x0.double() @ m.T.to(x0.device)).to(x0.dtype)

    def __repr__(self):
        return "LinearODE()"


class LogisticODE:
    r"""$\dot x = r x (1 - x)$ elementwise; $x(t) = \frac{x_0 e^{r(t - t_0)}}{1 - x_0 + x_0 e^{r(t - t_0)}}$."""

    def __init__(self, r: float = 2.0):
        self.r = r

    def vector_field(self, x, t):
        return self.r * x * (1 - x)

    def exact(self, x0, t0, t):
        e = math.exp(self.r * (t - t0))
        return x0 * e / (1 - x0 + x0 * e)

    def __repr__(self):
        return f"LogisticODE(r={self.r})"


class TimeDependentODE:
    r"""$\dot x = \omega \cos(\omega t)\, x$; $x(t) = x_0 \exp(\sin \omega t - \sin \omega t_0)$."""

    def __init__(self, omega: float = 3.0):
        self.omega = omega

    def vector_field(self, x, t):
        return self.omega * torch.cos(self.omega * _col(t, x)) * x

    def exact(self, x0, t0, t):
        return x0 * math.exp(math.sin(self.omega * t) - math.sin(self.omega * t0))

    def __repr__(self):
        return f"TimeDependentODE(omega={self.omega})"


class StiffRelaxation:
    r"""$\dot x_b = -\lambda_b (x_b - \cos t)$ with one rate $\lambda_b$ per sample.

    Exact: $x(t) = (x_0 - p(t_0)) e^{-\lambda (t - t_0)} + p(t)$ with
    $p(t) = \lambda (\lambda \cos t + \sin t) / (\lambda^2 + 1)$. Large $\lambda_b$ make
    sample $b$ stiff: a batch mixing rates tests per-sample error control.
    """

    def __init__(self, rates: Tensor):
        self.rates = rates.double()

    def vector_field(self, x, t):
        lam = _col(self.rates.to(x), x)
        return -lam * (x - torch.cos(_col(t, x)))

    def _p(self, lam, t):
        return lam * (lam * math.cos(t) + math.sin(t)) / (lam ** 2 + 1)

    def exact(self, x0, t0, t):
        lam = _col(self.rates.to(x0), x0)
        return (x0 - self._p(lam, t0)) * torch.exp(-lam * (t - t0)) + self._p(lam, t)

    def __repr__(self):
        return f"StiffRelaxation({self.rates.numel()} rates)"


class OrnsteinUhlenbeck:
    r"""$dx = \theta(\mu - x)\,dt + \sigma\,dW$: additive noise, Gaussian marginals.

    $E[x_t] = \mu + (x_0 - \mu) e^{-\theta t}$, $\mathrm{Var}[x_t] = \frac{\sigma^2}{2\theta}(1 - e^{-2\theta t})$.
    """

    noise_type = "additive"

    def __init__(self, theta: float = 1.0, mu: float = 0.5, sigma: float = 0.8):
        self.theta, self.mu, self.sigma = theta, mu, sigma

    def drift(self, x, t):
        return self.theta * (self.mu - x)

    def diffusion(self, x, t):
        return torch.full((1,) * x.ndim, self.sigma, dtype=x.dtype, device=x.device)

    def mean(self, x0, t0, t):
        return self.mu + (x0 - self.mu) * math.exp(-self.theta * (t - t0))

    def variance(self, t0, t):
        return self.sigma ** 2 / (2 * self.theta) * (1 - math.exp(-2 * self.theta * abs(t - t0)))

    def pathwise(self, x0: Tensor, dts, dws, dzs) -> Tensor:
        r"""The solution driven by a given path, from per-step $(\Delta W, \Delta Z)$ on a fine grid.

        Over a step of length $h$, $x_{k+1} = \mu + e^{-\theta h}(x_k - \mu) + \sigma \int e^{-\theta(t_{k+1} - s)} dW_s$
        and $\int e^{-\theta(t_{k+1}-s)} dW_s = \Delta W - \theta \Delta Z + O(\theta^2 h^{5/2})$
        (since $\int (t_{k+1} - s)\,dW_s = \Delta Z$): accurate to $O(h^2)$ globally.
        """
        x = x0.double()
        for h, dw, dz in zip(dts, dws, dzs):
            x = self.mu + math.exp(-self.theta * h) * (x - self.mu) + self.sigma * (dw.double() - self.theta * dz.double())
        return x

    def __repr__(self):
        return f"OrnsteinUhlenbeck(theta={self.theta}, mu={self.mu}, sigma={self.sigma})"


class GeometricBrownianMotion:
    r"""$dx = \mu x\,dt + \sigma x\,dW$ (diagonal noise, or scalar with `noise_type="scalar"`).

    Itô: $x_t = x_0 \exp((\mu - \sigma^2/2)(t - t_0) + \sigma (W_t - W_{t_0}))$;
    Stratonovich: $x_t = x_0 \exp(\mu (t - t_0) + \sigma (W_t - W_{t_0}))$.
    """

    def __init__(self, mu: float = 0.5, sigma: float = 0.6, sde_type: str = "ito", noise_type: str = "diagonal"):
        self.mu, self.sigma, self.sde_type, self.noise_type = mu, sigma, sde_type, noise_type

    def drift(self, x, t):
        return self.mu * x

    def diffusion(self, x, t):
        return self.sigma * x

    def exact(self, x0, t0, t, dw):
        rate = self.mu - (0.5 * self.sigma ** 2 if self.sde_type == "ito" else 0.0)
        return x0 * torch.exp(rate * (t - t0) + self.sigma * dw)

    def __repr__(self):
        return f"GeometricBrownianMotion(mu={self.mu}, sigma={self.sigma}, sde_type={self.sde_type!r})"


class GaussianTarget:
    r"""$N(\mu, \mathrm{diag}(\sigma^2))$ over the non-batch dimensions, for Langevin tests.

    `score(x)` $= -(x - \mu)/\sigma^2$, `log_prob(x)` is normalised. ULA with step
    $\epsilon$ is stationary at $N(\mu, \sigma^2 / (1 - \epsilon / (2\sigma^2)))$.
    """

    def __init__(self, mean: Tensor, std: Tensor):
        self.mean, self.std = mean, std

    def score(self, x):
        return (self.mean.to(x) - x) / self.std.to(x) ** 2

    def log_prob(self, x):
        z = (x - self.mean.to(x)) / self.std.to(x)
        lp = -0.5 * z * z - torch.log(self.std.to(x)) - 0.5 * math.log(2 * math.pi)
        return lp.flatten(1).sum(1)

    def ula_variance(self, step_size) -> Tensor:
        var = self.std ** 2
        return var / (1 - step_size / (2 * var))
