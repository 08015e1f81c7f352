r"""The analytic lab: Gaussian mixtures whose noised marginals are known in closed form.

For data $x_0 \sim \sum_k w_k\,\mathcal N(\mu_k, C_k)$ (diagonal $C_k = \operatorname{diag} s_k^2$,
or full covariances) and the transition $x_t = \alpha_t x_0 + \sigma_t\varepsilon$, the noised
marginal is again a mixture, $p_t = \sum_k w_k\,\mathcal N(\alpha_t\mu_k, \alpha_t^2 C_k + \sigma_t^2 I)$.
So its log-density, score, Tweedie denoiser $E[x_0\mid x_t]$, noise posterior mean
$E[\varepsilon\mid x_t]$ and, for labelled components, the exact classifier
$p_t(y\mid x_t)$ are all closed-form. So is the posterior given a linear-Gaussian
measurement $y = A x_0 + n$ ([`GaussianMixture.posterior`][scoresde.analytic.GaussianMixture.posterior]),
itself a Gaussian mixture with full covariances. Tests, docs, examples and benchmarks use these as
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

from ._checks import append_dims, as_time, check_batched, check_int, check_positive_finite, describe
from .sde import check_sde

__all__ = ["GaussianMixture", "DiffusedMixture"]


class GaussianMixture:
    r"""A mixture $\sum_k w_k\,\mathcal N(\mu_k, C_k)$ over data of any shape.

    The covariances are diagonal, $C_k = \operatorname{diag} s_k^2$ (`stds=`), or full
    (`covs=`, positive definite). A full covariance is held by its eigendecomposition
    $C_k = U_k \operatorname{diag}(\lambda_k) U_k^\top$, so every noised quantity is the
    diagonal formula in the eigenbasis: $\alpha^2 C_k + \sigma^2 I = U_k\operatorname{diag}(\alpha^2\lambda_k + \sigma^2)U_k^\top$,
    and no per-time matrix is factorised.

    Arguments:
        means: component means, shape `(K, *event_shape)`.
        stds: component standard deviations: a number, a `(K,)` tensor (isotropic) or a
            `(K, *event_shape)` tensor (diagonal); all > 0. Omit when `covs` is given.
        weights: mixture weights `(K,)`, positive (normalised here); uniform if omitted.
        labels: optional integer class of each component `(K,)`, for conditional
            generation and the exact classifier $p_t(y\mid x_t)$.
        covs: full covariances `(K, D, D)` over the flattened data ($D$ = product of the
            event shape), symmetric positive definite; instead of `stds`.

    Attributes:
        stds: the `(K, D)` standard deviations of a diagonal mixture, `None` for a full one.
        covariances: the `(K, D, D)` covariance matrices (either kind).
        eigvals, eigvecs: $\lambda_k$ `(K, D)` and $U_k$ `(K, D, D)` of $C_k = U_k\operatorname{diag}(\lambda_k)U_k^\top$
            (`eigvecs` is `None` for a diagonal mixture, whose `eigvals` are the variances $s_k^2$).

    Parameters keep the dtype of `means` (float64 recommended for exact references) and
    move to each input's device and dtype on use.
    """

    def __init__(
        self,
        means: Tensor | Sequence,
        stds: float | Tensor | Sequence | None = None,
        weights: Tensor | Sequence[float] | None = None,
        labels: Tensor | Sequence[int] | None = None,
        *,
        covs: Tensor | Sequence | None = None,
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

        if (stds is None) == (covs is None):
            raise ValueError("stds, covs: expected exactly one of them (diagonal or full covariances), got "
                             + ("neither" if stds is None else "both"))
        self.stds = self.eigvecs = None
        if covs is not None:
            covs = torch.as_tensor(covs, dtype=dtype)
            if covs.shape != (K, D, D):
                raise ValueError(f"covs: expected shape ({K}, {D}, {D}), got {tuple(covs.shape)}")
            if not bool(torch.isfinite(covs).all()):
                raise ValueError("covs: expected finite covariances, got NaN or inf")
            if not torch.allclose(covs, covs.mT, rtol=1e-6, atol=1e-10 * float(covs.abs().max())):
                raise ValueError("covs: expected symmetric matrices")
            lam, U = torch.linalg.eigh(0.5 * (covs + covs.mT))
            if not bool((lam > 0).all()):
                raise ValueError(f"covs: expected positive definite matrices, got smallest eigenvalue {lam.min().item():.3g}")
            self.eigvals, self.eigvecs = lam, U  # C_k = U_k diag(lam_k) U_k^T
        else:
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
            self.eigvals = self.stds**2  # the variances: C_k = diag(eigvals_k)

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

    @property
    def full(self) -> bool:
        """Whether the components have full (not diagonal) covariances."""
        return self.eigvecs is not None

    @property
    def covariances(self) -> Tensor:
        r"""The covariance matrices $C_k$, shape `(K, D, D)`."""
        if self.full:
            return (self.eigvecs * self.eigvals[:, None, :]) @ self.eigvecs.mT
        return torch.diag_embed(self.eigvals)

    def __repr__(self) -> str:
        kind = ", full covariances" if self.full else ""
        return f"GaussianMixture(K={self.K}, event_shape={self.event_shape}{kind})"

    def _params(self, like: Tensor) -> tuple:
        """(means, variances in the eigenbasis, weights, eigenvectors or None) on like's device and dtype."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                None if p is None else p.to(device=like.device, dtype=like.dtype)
                for p in (self.means, self.eigvals, self.weights, self.eigvecs)
            )
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
        noise = self.eigvals.to(device)[k].sqrt() * z
        if self.full:  # x = mu_k + U_k diag(sqrt(lam_k)) z
            noise = (self.eigvecs.to(device)[k] @ noise[..., None])[..., 0]
        x = self.means.to(device)[k] + noise
        x = x.reshape(n, *self.event_shape)
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ noised marginal
    def _components(self, x: Tensor, alpha, sigma):
        """Per-component log-densities (B, K), the residual x - alpha mu in the eigenbasis (B, K, D), its variances."""
        xf = self._flat(x)
        mu, lam, w, U = self._params(xf)
        a = append_dims(alpha, 3) if isinstance(alpha, Tensor) else alpha
        sg = append_dims(sigma, 3) if isinstance(sigma, Tensor) else sigma
        var = (a * a) * lam[None] + sg * sg  # (B or 1, K, D): eigenvalues of alpha^2 C_k + sigma^2 I
        diff = xf[:, None, :] - a * mu[None]
        if U is not None:  # coordinates in each component's eigenbasis, U_k^T (x - alpha mu_k)
            diff = torch.einsum("kdj,bkd->bkj", U, diff)
        log_n = -0.5 * ((diff * diff) / var + torch.log(2 * math.pi * var)).sum(-1)
        return log_n + torch.log(w), diff, var, a, lam

    def _from_eigenbasis(self, v: Tensor) -> Tensor:
        """U_k v_k for per-component vectors (B, K, D) given in the eigenbases."""
        U = self._params(v)[3]
        return v if U is None else torch.einsum("kdj,bkj->bkd", U, v)

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""$\log p_t(x)$ of the noised mixture ($\alpha=1, \sigma=0$: the data density), shape `(B,)`."""
        logits, *_ = self._components(x, alpha, sigma)
        return torch.logsumexp(logits, -1)

    def responsibilities(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""$p_t(k\mid x)$ for each component, shape `(B, K)`."""
        logits, *_ = self._components(x, alpha, sigma)
        return torch.softmax(logits, -1)

    def score(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        r"""$\nabla_x\log p_t(x) = -\sum_k p_t(k\mid x)\,(\alpha^2 C_k + \sigma^2 I)^{-1}(x - \alpha\mu_k)$."""
        logits, diff, var, *_ = self._components(x, alpha, sigma)
        r = torch.softmax(logits, -1)
        return -(r[..., None] * self._from_eigenbasis(diff / var)).sum(1).reshape(x.shape)

    def posterior_mean(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
        r"""$E[x_0\mid x_t = x] = \sum_k p_t(k\mid x)\big(\mu_k + \alpha C_k(\alpha^2 C_k + \sigma^2 I)^{-1}(x - \alpha\mu_k)\big)$.

        Computed from the per-component Gaussian posteriors, independently of the score, so
        it checks Tweedie's formula rather than restating it.
        """
        logits, diff, var, a, lam = self._components(x, alpha, sigma)
        mu = self._params(diff)[0]
        r = torch.softmax(logits, -1)
        m = mu[None] + self._from_eigenbasis((a * lam) / var * diff)
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

    def _subset(self, keep: Tensor, weights: Tensor | None = None, means: Tensor | None = None,
                eigvals: Tensor | None = None, eigvecs: Tensor | None = None) -> "GaussianMixture":
        """A mixture of the components `keep` (optionally with new parameters), without refactorising."""
        new = GaussianMixture.__new__(GaussianMixture)
        new.event_shape = self.event_shape
        new.means = (self.means if means is None else means)[keep]
        new.eigvals = (self.eigvals if eigvals is None else eigvals)[keep]
        vecs = self.eigvecs if eigvecs is None else eigvecs
        new.eigvecs = None if vecs is None else vecs[keep]
        new.stds = None if new.eigvecs is not None else new.eigvals.sqrt()
        w = (self.weights if weights is None else weights)[keep]
        new.weights = w / w.sum()
        new.labels = None if self.labels is None else self.labels[keep]
        new._cache = {}
        return new

    def condition(self, y: int) -> "GaussianMixture":
        r"""The mixture of the components labelled `y`, weights renormalised: $p(x_0\mid y)$."""
        if self.labels is None:
            raise ValueError("labels: this mixture has no component labels; pass labels= to GaussianMixture")
        keep = self.labels == int(y)
        if not bool(keep.any()):
            raise ValueError(f"y: no component has label {y!r}; labels are {sorted(set(self.labels.tolist()))}")
        return self._subset(keep)

    def mean(self) -> Tensor:
        r"""The mixture mean $\sum_k w_k\mu_k$, shape `event_shape`."""
        return (self.weights[:, None] * self.means).sum(0).reshape(self.event_shape)

    def posterior(self, A: Tensor, y: Tensor, noise_std: float | Tensor) -> "GaussianMixture":
        r"""The exact posterior $p(x_0\mid y)$ for the measurement $y = A x_0 + n$, $n \sim \mathcal N(0, R)$.

        With $R = \operatorname{diag}(\text{noise\_std}^2)$ and, per component, the
        predicted measurement covariance $S_k = A C_k A^\top + R$, Bayes' rule for a
        Gaussian prior and a linear-Gaussian likelihood gives again a mixture:

        $$p(x_0\mid y) = \sum_k w'_k\,\mathcal N(\mu'_k, C'_k),\quad
        \mu'_k = \mu_k + C_k A^\top S_k^{-1}(y - A\mu_k),\quad
        C'_k = C_k - C_k A^\top S_k^{-1} A C_k,\quad
        w'_k \propto w_k\,\mathcal N(y;\,A\mu_k,\,S_k).$$

        The result has full covariances, so its diffused score, denoiser, samples and
        log-density (through [`diffused`][scoresde.analytic.GaussianMixture.diffused]) are exact too.

        Arguments:
            A: the measurement matrix, shape `(M, D)` over the flattened data.
            y: the measurement, shape `(M,)`.
            noise_std: the measurement noise std: a number > 0 (isotropic) or an `(M,)`
                tensor of per-measurement stds > 0.

        Returns:
            The posterior [`GaussianMixture`][scoresde.analytic.GaussianMixture] (labels kept).

        Reference: Bishop, *Pattern Recognition and Machine Learning*, 2006, section 2.3.3.
        """
        dtype = self.means.dtype
        if not isinstance(A, Tensor):
            A = torch.as_tensor(A, dtype=dtype)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A: expected a matrix of shape (M, {self.dim}) acting on the flattened data, got {tuple(A.shape)}")
        M = A.shape[0]
        A = A.to(dtype)
        y = torch.as_tensor(y).to(dtype)
        if y.shape != (M,):
            raise ValueError(f"y: expected shape ({M},) to match the rows of A, got {tuple(y.shape)}")
        noise = torch.as_tensor(noise_std, dtype=dtype)
        if noise.ndim > 1 or (noise.ndim == 1 and noise.shape != (M,)):
            raise ValueError(f"noise_std: expected a number or shape ({M},), got {tuple(noise.shape)}")
        if not bool(torch.isfinite(noise).all()) or not bool((noise > 0).all()):
            raise ValueError(f"noise_std: expected finite stds > 0 for a posterior density, got {describe(noise)}")
        C = self.covariances  # (K, D, D)
        AC = A @ C  # (K, M, D)
        S = AC @ A.T + torch.diag_embed(noise.expand(M) ** 2)  # S_k = A C_k A^T + R
        L = torch.linalg.cholesky(S)
        r = y - self.means @ A.T  # (K, M): y - A mu_k
        G = torch.cholesky_solve(AC, L)  # S_k^{-1} A C_k, (K, M, D)
        means = self.means + (G.mT @ r[..., None])[..., 0]  # mu_k + C_k A^T S_k^{-1} r_k
        covs = C - AC.mT @ G  # C_k - C_k A^T S_k^{-1} A C_k
        Sr = torch.cholesky_solve(r[..., None], L)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_lik = -0.5 * ((r * Sr).sum(-1) + logdet + M * math.log(2 * math.pi))  # log N(y; A mu_k, S_k)
        logits = torch.log(self.weights) + log_lik
        weights = torch.softmax(logits, 0)
        lam, U = torch.linalg.eigh(0.5 * (covs + covs.mT))
        if not bool((lam > 0).all()):
            raise ValueError(
                f"noise_std: the posterior covariance lost positive definiteness in {dtype}"
                f" (smallest eigenvalue {lam.min().item():.3g}); use float64 or a larger noise_std"
            )
        keep = torch.ones(self.K, dtype=torch.bool)
        return self._subset(keep, weights=weights, means=means, eigvals=lam, eigvecs=U)

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
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture: expected a GaussianMixture, got {type(mixture).__name__}")
        check_sde("sde", sde)
        self.mixture, self.sde = mixture, sde

    def __repr__(self) -> str:
        return f"DiffusedMixture({self.mixture!r}, {self.sde!r})"

    def _coefs(self, x: Tensor, t) -> tuple[Tensor, Tensor]:
        t = as_time(t, like=x)  # a score called every step: times are checked at the entry points
        return self.sde.marginal(t)

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
