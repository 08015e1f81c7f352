r"""The analytic lab: Gaussian mixtures whose noised marginals are known in closed form.

For data $x_0 \sim \sum_k w_k\,\mathcal N(\mu_k, \operatorname{diag} s_k^2)$ and the
transition $x_t = \alpha_t x_0 + \sigma_t\varepsilon$, the noised marginal is again a
mixture, $p_t = \sum_k w_k\,\mathcal N(\alpha_t\mu_k, \operatorname{diag}(\alpha_t^2 s_k^2 + \sigma_t^2))$.
So its log-density, score, Tweedie denoiser $E[x_0\mid x_t]$, noise posterior mean
$E[\varepsilon\mid x_t]$ and, for labelled components, the exact classifier
$p_t(y\mid x_t)$ are all closed-form. Tests, docs, examples and benchmarks use these as
exact references: a sampler driven by [`DiffusedMixture.score`][scoresde.analytic.DiffusedMixture.score]
has no network error, so what it gets wrong is the sampler's own.

Example:
    ```python
    mix = GaussianMixture.ring(8, radius=4.0, std=0.2)
    exact = mix.diffused(VPSDE())
    s = exact.score(x, t)                # grad log p_t(x)
    x0_hat = exact.denoiser(x, t)        # E[x0 | x_t]
    ```
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ._checks import append_dims, as_time, check_batched, check_int, check_positive_finite

__all__ = ["GaussianMixture", "DiffusedMixture"]


class GaussianMixture:
    r"""A mixture $\sum_k w_k\,\mathcal N(\mu_k, \operatorname{diag} s_k^2)$ over data of any shape.

    Arguments:
        means: component means, shape `(K, *event_shape)`.
        stds: component standard deviations: a number, a `(K,)` tensor (isotropic) or a
            `(K, *event_shape)` tensor (diagonal); all > 0.
        weights: mixture weights `(K,)`, positive (normalised here); uniform if omitted.
        labels: optional integer class of each component `(K,)`, for conditional
            generation and the exact classifier $p_t(y\mid x_t)$.

    Parameters keep the dtype of `means` (float64 recommended for exact references) and
    move to each input's device and dtype on use.
    """

    def __init__(
        self,
        means: Tensor | Sequence,
        stds: float | Tensor | Sequence,
        weights: Tensor | Sequence[float] | None = None,
        labels: Tensor | Sequence[int] | None = None,
    ):
        means = torch.as_tensor(means)
        if not torch.is_floating_point(means):
            means = means.to(torch.float64)
        if means.ndim < 2:
            raise ValueError(f"means: expected shape (K, *event_shape), got {tuple(means.shape)}")
        K = means.shape[0]
        self.event_shape = tuple(means.shape[1:])
        D = int(math.prod(self.event_shape))
        self.means = means.reshape(K, D)
        dtype = means.dtype

        if isinstance(stds, (int, float)) and not isinstance(stds, bool):
            stds = torch.full((K,), float(stds), dtype=dtype)
        stds = torch.as_tensor(stds, dtype=dtype)
        if stds.shape == (K,):
            stds = stds[:, None]
        elif stds.numel() == K * D and stds.shape[0] == K:
            stds = stds.reshape(K, D)
        else:
            raise ValueError(
                f"stds: expected a number, shape ({K},) or shape {(K, *self.event_shape)}, got {tuple(stds.shape)}"
            )
        if not bool((stds > 0).all()) or not bool(torch.isfinite(stds).all()):
            raise ValueError("stds: expected finite standard deviations > 0")
        self.stds = stds.expand(K, D).clone()

        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=dtype)
        weights = torch.as_tensor(weights, dtype=dtype)
        if weights.shape != (K,) or not bool((weights > 0).all()) or not bool(torch.isfinite(weights).all()):
            raise ValueError(f"weights: expected {K} finite positive weights, got {weights.tolist()}")
        self.weights = weights / weights.sum()

        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (K,) or labels.is_floating_point():
                raise ValueError(f"labels: expected {K} integer labels, got {labels!r}")
            labels = labels.long()
        self.labels = labels
        self._cache: dict = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def gaussian(cls, mean, std) -> "GaussianMixture":
        r"""A single Gaussian $\mathcal N(\mu, \operatorname{diag} s^2)$; `mean` has the event shape."""
        mean = torch.as_tensor(mean)
        if not torch.is_floating_point(mean):
            mean = mean.to(torch.float64)
        std = torch.as_tensor(std, dtype=mean.dtype)
        stds = std.reshape(1) if std.numel() == 1 else std[None]
        return cls(mean[None], stds)

    @classmethod
    def ring(
        cls,
        n_modes: int = 8,
        radius: float = 4.0,
        std: float = 0.2,
        dim: int = 2,
        weights: Sequence[float] | Tensor | None = None,
        labels: Sequence[int] | Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> "GaussianMixture":
        r"""`n_modes` isotropic components with means on a circle of `radius` in the first two coordinates.

        In `dim > 2` dimensions the other coordinates of every mean are 0, so the
        components stay `2 * radius * sin(pi / n_modes)` apart. Labels default to the
        component index.
        """
        n_modes = check_int("n_modes", n_modes)
        dim = check_int("dim", dim, minimum=2)
        radius = check_positive_finite("radius", radius)
        std = check_positive_finite("std", std)
        angle = torch.arange(n_modes, dtype=dtype) * (2 * math.pi / n_modes)
        means = torch.zeros(n_modes, dim, dtype=dtype)
        means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
        labels = torch.arange(n_modes) if labels is None else labels
        return cls(means, std, weights=weights, labels=labels)

    # ------------------------------------------------------------------ basics
    @property
    def K(self) -> int:
        """The number of components."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """The data dimension (product of the event shape)."""
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.K}, event_shape={self.event_shape})"

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(p.to(device=like.device, dtype=like.dtype) for p in (self.means, self.stds, self.weights))
        return self._cache[key]

    def _flat(self, x: Tensor, name: str = "x") -> Tensor:
        x = check_batched(name, x)
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{name}: expected shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        return_labels: bool = False,
        device: torch.device | str | None = None,
    ):
        """Draw `n` samples `(n, *event_shape)` (and their component indices if `return_labels`)."""
        n = check_int("n", n)
        if device is None and generator is not None:
            device = generator.device
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=self.means.dtype)
        x = self.means.to(device)[k] + self.stds.to(device)[k] * z
        x = x.reshape(n, *self.event_shape)
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ noised marginal
    def _components(self, x: Tensor, alpha, sigma):
        """Per-component log-densities (B, K), the residual x - alpha mu (B, K, D) and the variances."""
        xf = self._flat(x)
        mu, s, w = self._params(xf)
        a = append_dims(alpha, 3) if isinstance(alpha, Tensor) else alpha
        sg = append_dims(sigma, 3) if isinstance(sigma, Tensor) else sigma
        var = (a * a) * (s * s)[None] + sg * sg  # (B or 1, K, D)
        diff = xf[:, None, :] - a * mu[None]
        log_n = -0.5 * ((diff * diff) / var + torch.log(2 * math.pi * var)).sum(-1)
        return log_n + torch.log(w), diff, var, a, s

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""$\log p_t(x)$ of the noised mixture ($\alpha=1, \sigma=0$: the data density), shape `(B,)`."""
        logits, *_ = self._components(x, alpha, sigma)
        return torch.logsumexp(logits, -1)

    def responsibilities(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""$p_t(k\mid x)$ for each component, shape `(B, K)`."""
        logits, *_ = self._components(x, alpha, sigma)
        return torch.softmax(logits, -1)

    def score(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""$\nabla_x\log p_t(x) = -\sum_k p_t(k\mid x)\,(x - \alpha\mu_k)/(\alpha^2 s_k^2 + \sigma^2)$."""
        logits, diff, var, *_ = self._components(x, alpha, sigma)
        r = torch.softmax(logits, -1)
        return -(r[..., None] * diff / var).sum(1).reshape(x.shape)

    def posterior_mean(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
        r"""$E[x_0\mid x_t = x] = \sum_k p_t(k\mid x)\big(\mu_k + \frac{\alpha s_k^2}{\alpha^2 s_k^2 + \sigma^2}(x - \alpha\mu_k)\big)$.

        Computed from the per-component Gaussian posteriors, independently of the score, so
        it checks Tweedie's formula rather than restating it.
        """
        logits, diff, var, a, s = self._components(x, alpha, sigma)
        mu, _, _ = self._params(diff)
        r = torch.softmax(logits, -1)
        m = mu[None] + (a * s * s) / var * diff
        return (r[..., None] * m).sum(1).reshape(x.shape)

    def class_log_prob(self, x: Tensor, y: Tensor | int, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""The exact classifier $\log p_t(y\mid x) = \log\sum_{k: \ell_k = y} p_t(k\mid x)$, shape `(B,)`."""
        if self.labels is None:
            raise ValueError("labels: this mixture has no component labels; pass labels= to GaussianMixture")
        logits, *_ = self._components(x, alpha, sigma)
        B = logits.shape[0]
        y = torch.as_tensor(y, device=logits.device)
        if y.is_floating_point():
            raise TypeError(f"y: expected integer labels, got dtype {y.dtype}")
        y = y.expand(B) if y.ndim == 0 else y
        if y.shape != (B,):
            raise ValueError(f"y: expected a label or a ({B},) tensor of labels, got shape {tuple(y.shape)}")
        match = self.labels.to(logits.device)[None, :] == y[:, None]
        masked = logits.masked_fill(~match, float("-inf"))
        return torch.logsumexp(masked, -1) - torch.logsumexp(logits, -1)

    def condition(self, y: int) -> "GaussianMixture":
        r"""The mixture of the components labelled `y`, weights renormalised: $p(x_0\mid y)$."""
        if self.labels is None:
            raise ValueError("labels: this mixture has no component labels; pass labels= to GaussianMixture")
        keep = self.labels == int(y)
        if not bool(keep.any()):
            raise ValueError(f"y: no component has label {y!r}; labels are {sorted(set(self.labels.tolist()))}")
        return GaussianMixture(
            self.means[keep].reshape(-1, *self.event_shape),
            self.stds[keep].reshape(-1, *self.event_shape),
            self.weights[keep],
            self.labels[keep],
        )

    def diffused(self, sde) -> "DiffusedMixture":
        """This mixture pushed through `sde`'s forward process: exact functions of `(x, t)`."""
        return DiffusedMixture(self, sde)


class DiffusedMixture:
    r"""A [`GaussianMixture`][scoresde.analytic.GaussianMixture] as data of an SDE: exact $p_t$ and its functionals.

    Each method takes `(x, t)` with `t` a number or a `(B,)` tensor and evaluates the
    closed form with the SDE's $(\alpha_t, \sigma_t)$; `score` is a valid score callable
    for every sampler and guidance function.
    """

    def __init__(self, mixture: GaussianMixture, sde):
        from .sde import SDE

        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture: expected a GaussianMixture, got {type(mixture).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde: expected a scoresde.SDE, got {type(sde).__name__}")
        self.mixture, self.sde = mixture, sde

    def __repr__(self) -> str:
        return f"DiffusedMixture({self.mixture!r}, {self.sde!r})"

    def _coefs(self, x: Tensor, t) -> tuple[Tensor, Tensor]:
        t = as_time(t, like=x, T=self.sde.T)
        return self.sde._marginal(t)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""$\nabla_x\log p_t(x)$."""
        return self.mixture.score(x, *self._coefs(x, t))

    __call__ = score

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""$\log p_t(x)$, shape `(B,)`."""
        return self.mixture.log_prob(x, *self._coefs(x, t))

    def denoiser(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""Tweedie's posterior mean $E[x_0\mid x_t = x]$, from the component posteriors."""
        return self.mixture.posterior_mean(x, *self._coefs(x, t))

    def eps(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""$E[\varepsilon\mid x_t = x] = (x - \alpha_t E[x_0\mid x_t])/\sigma_t$."""
        alpha, sigma = self._coefs(x, t)
        x0 = self.mixture.posterior_mean(x, alpha, sigma)
        return (x - append_dims(alpha, x.ndim) * x0) / append_dims(sigma, x.ndim)

    def responsibilities(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""$p_t(k\mid x)$, shape `(B, K)`."""
        return self.mixture.responsibilities(x, *self._coefs(x, t))

    def class_log_prob(self, x: Tensor, t: float | Tensor, y: Tensor | int) -> Tensor:
        r"""The exact noisy classifier $\log p_t(y\mid x)$, shape `(B,)`."""
        return self.mixture.class_log_prob(x, y, *self._coefs(x, t))

    def conditional(self, y: int) -> "DiffusedMixture":
        r"""The diffused $p(x_0\mid y)$: its score is the exact conditional score $\nabla\log p_t(x\mid y)$."""
        return DiffusedMixture(self.mixture.condition(y), self.sde)

    def sample(self, n: int, t: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw `n` samples of $x_t$ (exactly, through the transition kernel)."""
        x0 = self.mixture.sample(n, generator=generator)
        return self.sde.perturb(x0, t, generator=generator)
