r"""Posterior sampling for inverse problems: an unconditional score plus a likelihood of the clean data.

Given a measurement $y = A x_0 + n$, $n \sim \mathcal N(0, \sigma_y^2 I)$ (or any
differentiable $\log p(y\mid x_0)$), the posterior's diffused score is
$\nabla\log p_t(x_t\mid y) = \nabla\log p_t(x_t) + \nabla\log p_t(y\mid x_t)$, and the second
term is intractable. Each method approximates $p(y\mid x_t)$ through Tweedie's denoiser
$\hat x_0(x_t) = E[x_0\mid x_t] = (x_t + \sigma_t^2 s(x_t, t))/\alpha_t$, with Jacobian
$J = \partial\hat x_0/\partial x_t$:

| method | $\nabla\log p_t(y\mid x_t)$ approximated by |
|---|---|
| `"dps"` (Chung et al. 2023) | $J^\top\nabla_{x_0}\log p(y\mid x_0)\big|_{\hat x_0}$, i.e. $p(y\mid x_t) \approx p(y\mid \hat x_0)$ |
| `"pigdm"` (Song et al. 2023) | $J^\top A^\top(r_t^2 AA^\top + \sigma_y^2 I)^{-1}(y - A\hat x_0)$ |
| `"mmps"` (Rozet et al. 2024) | $J^\top A^\top(A\,V_t A^\top + \sigma_y^2 I)^{-1}(y - A\hat x_0)$, $V_t = \tfrac{\sigma_t^2}{\alpha_t}J$ |

$V_t = \operatorname{Cov}[x_0\mid x_t] = \frac{\sigma_t^2}{\alpha_t}\,\partial\hat x_0/\partial x_t$ is
Tweedie's second-order formula, so for a Gaussian prior (where $x_0\mid x_t$ is Gaussian with
a covariance independent of $x_t$) MMPS with an exact score and a converged solve is the
*exact* posterior score. PiGDM replaces $V_t$ by $r_t^2 I$, the posterior variance of a
Gaussian prior of variance `data_var` (the paper's $r_t^2 = \sigma_t^2/(\alpha_t^2+\sigma_t^2)$
for `data_var=1`). DPS drops the covariance altogether and is exact only as $\sigma_t \to 0$.

All gradients are vector-Jacobian products with autograd enabled locally, so sampling runs
under `torch.no_grad()`; the result is a score callable for every sampler.

References: Chung, Kim, Mccann, Klasky, Ye, *Diffusion Posterior Sampling for General Noisy
Inverse Problems*, ICLR 2023; Song, Vahdat, Mardani, Kautz, *Pseudoinverse-Guided Diffusion
Models for Inverse Problems*, ICLR 2023; Rozet, Andry, Lanusse, Louppe, *Learning Diffusion
Priors from Observations by Expectation Maximization*, NeurIPS 2024.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .._checks import append_dims, as_time, check_batched, check_float_tensor, check_int, describe
from ..parameterization import score_to_x0
from ..sde import SDE
from ._checks import ScoreFn, _check_callable, _check_output, _check_sde, _finite_number
from .scales import Scale, _check_scale, _level, _resolve_scale

#: The posterior-sampling methods of [`posterior_score`][scoresde.guidance.posterior_score].
POSTERIOR_METHODS = ("dps", "pigdm", "mmps")


class LinearMeasurement:
    r"""A linear-Gaussian measurement $y = A x_0 + n$, $n \sim \mathcal N(0, \operatorname{diag}\sigma_y^2)$.

    $A$ is a matrix `(M, D)` acting on the flattened data, or a pair of callables for
    operators too large for a matrix (a blur, a mask, a subsampling of images):
    `A(x) -> (B, *measurement_shape)` on data `(B, *event_shape)` and its adjoint
    `AT(v) -> (B, *event_shape)`, with $\langle A x, v\rangle = \langle x, A^\top v\rangle$.

    Arguments:
        A: a `(M, D)` matrix, or a callable `A(x)` (then `AT` is required).
        y: the measurement: one for all samples (the shape of $A x$ for one sample, `(M,)`
            for a matrix) or one per sample (the shape of $A x$ for the batch).
        noise_std: $\sigma_y \ge 0$: a number or a tensor shaped like one measurement
            (per-measurement stds). 0 is a noiseless measurement (not for DPS's likelihood).
        AT: the adjoint callable `AT(v)` when `A` is a callable.

    Example:
        ```python
        mask = torch.rand(3, 32, 32) < 0.3
        meas = LinearMeasurement(lambda x: x * mask, y, 0.05, AT=lambda v: v * mask)
        ```
    """

    def __init__(self, A: Tensor | Callable[[Tensor], Tensor], y: Tensor, noise_std: float | Tensor,
                 *, AT: Callable[[Tensor], Tensor] | None = None):
        y = check_float_tensor("y", y)
        if isinstance(A, Tensor):
            check_float_tensor("A", A)
            if A.ndim != 2:
                raise ValueError(f"A: expected a matrix of shape (M, D), got shape {tuple(A.shape)}")
            if AT is not None:
                raise ValueError("AT: the adjoint of a matrix A is its transpose; pass AT only with a callable A")
            if y.shape[-1:] != A.shape[:1] or y.ndim > 2:
                raise ValueError(
                    f"y: expected shape ({A.shape[0]},) or (B, {A.shape[0]}) to match the {A.shape[0]} rows of A,"
                    f" got {tuple(y.shape)}"
                )
            self.matrix: Tensor | None = A
            self._A = self._AT = None
        elif callable(A):
            if not callable(AT):
                raise TypeError(f"AT: expected the adjoint callable AT(v) of the operator A, got {type(AT).__name__}")
            self.matrix, self._A, self._AT = None, A, AT
        else:
            raise TypeError(f"A: expected a (M, D) tensor or a callable A(x), got {type(A).__name__}")
        self.y = y
        if isinstance(noise_std, Tensor):
            check_float_tensor("noise_std", noise_std)
            one = y.shape[-1:] if self.matrix is not None else None
            if noise_std.ndim > 0 and one is not None and noise_std.shape != one:
                raise ValueError(f"noise_std: expected a number or shape {tuple(one)}, got {tuple(noise_std.shape)}")
            bad = ~torch.isfinite(noise_std) | (noise_std < 0)
            if bool(bad.any()):
                raise ValueError(f"noise_std: expected finite stds >= 0, got {describe(noise_std)}")
            self.noise_std: float | Tensor = noise_std if noise_std.ndim > 0 else float(noise_std)
        else:
            value = _finite_number("noise_std", noise_std)
            if value < 0:
                raise ValueError(f"noise_std: expected a std >= 0, got {value!r}")
            self.noise_std = value
        self._cache: dict = {}

    def _on(self, name: str, like: Tensor) -> Tensor:
        """The tensor attribute `name` on like's device and dtype, moved once and cached."""
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def __repr__(self) -> str:
        kind = f"matrix {tuple(self.matrix.shape)}" if self.matrix is not None else "operator"
        s = describe(self.noise_std) if isinstance(self.noise_std, Tensor) else repr(self.noise_std)
        return f"LinearMeasurement({kind}, y={tuple(self.y.shape)}, noise_std={s})"

    @property
    def isotropic(self) -> bool:
        """Whether the noise std is one number."""
        return not isinstance(self.noise_std, Tensor)

    def forward(self, x: Tensor) -> Tensor:
        r"""$A x$ for data `(B, *event_shape)`."""
        if self.matrix is None:
            return self._A(x)
        xf = x.reshape(x.shape[0], -1)
        if xf.shape[1] != self.matrix.shape[1]:
            raise ValueError(
                f"A: expected a matrix of shape ({self.matrix.shape[0]}, {xf.shape[1]}) to act on data of"
                f" shape {tuple(x.shape[1:])}, got {tuple(self.matrix.shape)}"
            )
        return xf @ self._on("matrix", x).T

    def adjoint(self, v: Tensor, like: Tensor) -> Tensor:
        r"""$A^\top v$, shaped like the data `like`."""
        if self.matrix is None:
            return self._AT(v)
        return (v @ self._on("matrix", v)).reshape(like.shape)

    def target(self, Ax: Tensor) -> Tensor:
        """The measurement $y$ broadcast to the batch of `Ax`, or an error naming y."""
        y = self._on("y", Ax)
        if y.shape == Ax.shape:
            return y
        if y.shape == Ax.shape[1:]:
            return y.expand_as(Ax)
        raise ValueError(
            f"y: expected the shape of A x for one sample, {tuple(Ax.shape[1:])}, or for the batch,"
            f" {tuple(Ax.shape)}, got {tuple(y.shape)}"
        )

    def _noise_var(self, like: Tensor) -> float | Tensor:
        s = self.noise_std
        return s * s if isinstance(s, float) else self._on("noise_std", like) ** 2

    def residual(self, x0: Tensor) -> Tensor:
        r"""$y - A x_0$, shape `(B, *measurement_shape)`."""
        Ax = self.forward(x0)
        return self.target(Ax) - Ax

    def log_likelihood(self, x0: Tensor) -> Tensor:
        r"""$\log\mathcal N(y;\,A x_0,\,\operatorname{diag}\sigma_y^2)$, shape `(B,)` (needs $\sigma_y > 0$)."""
        r = self.residual(x0)
        var = torch.as_tensor(self._noise_var(r), dtype=r.dtype, device=r.device).expand(r.shape[1:])
        if not bool((var > 0).all()):
            raise ValueError("noise_std: the Gaussian log-likelihood needs stds > 0, got a 0 std")
        quad = (r * r / var).flatten(1).sum(1)
        return -0.5 * (quad + torch.log(2 * math.pi * var).sum())


def _cg(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """Solve matvec(u) = b per sample by `iters` conjugate-gradient steps from u = 0 (no host sync)."""
    dims = tuple(range(1, b.ndim))

    def dot(p, q):
        return append_dims((p * q).sum(dims), b.ndim)

    u = torch.zeros_like(b)
    r = b.clone()  # residual b - matvec(u)
    p = r.clone()  # search direction
    rr = dot(r, r)
    for _ in range(iters):
        Ap = matvec(p)
        pAp = dot(p, Ap)
        a = torch.where(pAp > 0, rr / torch.where(pAp > 0, pAp, 1.0), 0.0)  # step length (0 once converged)
        u = u + a * p
        r = r - a * Ap
        rr_new = dot(r, r)
        beta = torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, 1.0), 0.0)
        p = r + beta * p
        rr = rr_new
    return u


class _PosteriorScore:
    def __init__(self, score, sde, measurement, method, scale, zeta, data_var, cg_iters):
        self.score, self.sde, self.measurement, self.method = score, sde, measurement, method
        self.scale, self.zeta, self.data_var, self.cg_iters = scale, zeta, data_var, cg_iters

    def __repr__(self) -> str:
        extra = f", zeta={self.zeta}" if self.zeta is not None else ""
        extra += f", cg_iters={self.cg_iters}" if self.cg_iters else ""
        return f"PosteriorScore(method={self.method!r}, scale={self.scale!r}{extra}, measurement={self.measurement!r})"

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        x = check_batched("x", x)
        alpha, sigma = self.sde.marginal(as_time(t, like=x))
        w = _resolve_scale("scale", self.scale, x, lambda: _level(self.sde, x, t))
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            s = _check_output("score", self.score(x_in, t), x)
            x0_hat = score_to_x0(s, x_in, alpha, sigma)  # Tweedie: (x_t + sigma^2 s) / alpha
            grad = self._likelihood_grad(x_in, x0_hat, alpha, sigma)
        return s.detach() + w * grad

    def _vjp(self, x_in: Tensor, x0_hat: Tensor, v: Tensor) -> Tensor:
        """J^T v with J = d x0_hat / d x_t (the graph kept for further products)."""
        (g,) = torch.autograd.grad(x0_hat, x_in, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(x_in) if g is None else g

    def _likelihood_grad(self, x_in, x0_hat, alpha, sigma) -> Tensor:
        meas, B = self.measurement, x_in.shape[0]
        if self.method == "dps":
            if not isinstance(meas, LinearMeasurement):  # any differentiable log p(y | x0)
                ll = meas(x0_hat)
                if not isinstance(ll, Tensor) or ll.shape != (B,):
                    got = tuple(ll.shape) if isinstance(ll, Tensor) else type(ll).__name__
                    raise ValueError(f"log_likelihood: expected an output of shape ({B},), one log-likelihood per sample, got {got}")
                if not ll.requires_grad:
                    raise ValueError("log_likelihood: its output does not depend on x0 through autograd")
                (g,) = torch.autograd.grad(ll.sum(), x_in, allow_unused=True)
                return torch.zeros_like(x_in) if g is None else g
            r = meas.residual(x0_hat)  # y - A x0_hat
            if self.zeta is None:  # grad of log N(y; A x0_hat, sigma_y^2) through the denoiser
                v = r / meas._noise_var(r)
                return self._vjp(x_in, x0_hat, meas.adjoint(v.detach(), x_in))
            # Chung et al., Algorithm 1: step -zeta_i grad ||y - A x0_hat||^2, zeta_i = zeta / ||y - A x0_hat||
            sq = (r * r).flatten(1).sum(1)
            norm = sq.detach().sqrt().clamp_min(torch.finfo(sq.dtype).tiny)
            (g,) = torch.autograd.grad(-(self.zeta * sq / norm).sum(), x_in)
            return g
        r = meas.residual(x0_hat).detach()  # y - A x0_hat
        noise_var = meas._noise_var(r)
        if self.method == "pigdm":
            a2, s2 = append_dims(alpha * alpha, r.ndim), append_dims(sigma * sigma, r.ndim)
            r2 = self.data_var * s2 / (a2 * self.data_var + s2)  # posterior variance of N(0, data_var) given x_t
            u = self._pigdm_solve(r, r2, noise_var, x_in)  # (r_t^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat)
        else:  # mmps
            c = append_dims(sigma * sigma / alpha, x_in.ndim)  # Cov[x0 | x_t] = (sigma^2 / alpha) J

            def matvec(v):  # (sigma_y^2 I + A Cov[x0|x_t] A^T) v, with J v = J^T v (J is symmetric)
                return noise_var * v + meas.forward(c * self._vjp(x_in, x0_hat, meas.adjoint(v, x_in)))

            u = _cg(matvec, r, self.cg_iters)
        return self._vjp(x_in, x0_hat, meas.adjoint(u, x_in))  # J^T A^T u

    def _pigdm_solve(self, r: Tensor, r2: Tensor, noise_var, x_in: Tensor) -> Tensor:
        meas = self.measurement
        A = meas.matrix
        if A is None:  # an operator: conjugate gradients on v -> r_t^2 A A^T v + sigma_y^2 v
            return _cg(lambda v: r2 * meas.forward(meas.adjoint(v, x_in)) + noise_var * v, r, self.cg_iters)
        A = meas._on("matrix", r)
        noise = torch.diag_embed(torch.as_tensor(noise_var, dtype=r.dtype, device=r.device).expand(r.shape))  # (B, M, M)
        S = r2.reshape(-1, 1, 1) * (A @ A.T) + noise  # r_t^2 A A^T + diag(sigma_y^2), per sample
        return torch.linalg.solve(S, r[..., None])[..., 0]


def posterior_score(
    score: ScoreFn,
    sde: SDE,
    measurement: LinearMeasurement | Callable[[Tensor], Tensor],
    method: str = "mmps",
    scale: Scale = 1.0,
    *,
    zeta: float | None = None,
    data_var: float = 1.0,
    cg_iters: int | None = None,
) -> ScoreFn:
    r"""The posterior score $\nabla\log p_t(x_t) + w\,\nabla\log p_t(y\mid x_t)$ for a measurement of the clean data.

    The likelihood term $\nabla\log p_t(y\mid x_t)$ is approximated through Tweedie's denoiser
    $\hat x_0$ and its Jacobian $J = \partial\hat x_0/\partial x_t$: `"dps"` uses
    $J^\top\nabla_{x_0}\log p(y\mid\hat x_0)$, `"pigdm"` $J^\top A^\top(r_t^2 AA^\top + \sigma_y^2 I)^{-1}(y - A\hat x_0)$,
    `"mmps"` the same with $A\,\tfrac{\sigma_t^2}{\alpha_t}J\,A^\top$ in place of $r_t^2 AA^\top$ (solved by
    conjugate gradients with vector-Jacobian products). `scale` $w$ multiplies it (1 is Bayes' rule). The result is a score callable for every sampler; the gradients are
    taken with autograd enabled locally, so sampling may run under `torch.no_grad()`.

    Arguments:
        score: the unconditional score `score(x, t)` (differentiable in `x`).
        sde: the SDE, for $(\alpha_t, \sigma_t)$.
        measurement: a [`LinearMeasurement`][scoresde.guidance.LinearMeasurement], or for
            `method="dps"` any differentiable `log_likelihood(x0) -> (B,)` (non-linear measurements).
        method: `"dps"`, `"pigdm"` or `"mmps"`.
        scale: $w$: a number, a `(B,)` tensor or a noise-level schedule.
        zeta: DPS only: the paper's step-size rule, the guidance term
            $-\zeta\,\nabla_{x_t}\lVert y - A\hat x_0\rVert^2/\lVert y - A\hat x_0\rVert$
            (Chung et al., Algorithm 1, $\zeta_i = \zeta'/\lVert y - A\hat x_0\rVert$) instead of
            the Gaussian likelihood's gradient; the paper uses $\zeta' \in [0.1, 1]$.
        data_var: PiGDM only: $r_t^2 = v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)$ with $v$ = `data_var`
            (1 is the paper's choice, for data scaled to unit variance).
        cg_iters: conjugate-gradient iterations: MMPS (default 3; each costs one vector-Jacobian
            product) and PiGDM with an operator (default 20; no network call). A matrix PiGDM is
            solved directly.

    Returns:
        A score callable `guided(x, t)`.

    Example:
        ```python
        guided = posterior_score(score, sde, LinearMeasurement(A, y, 0.1), method="mmps")
        x = scoresde.sample(sde, guided, (1000, 2), sampler=DDIM(eta=1.0), steps=100)
        ```

    References: Chung et al., ICLR 2023; Song et al., ICLR 2023; Rozet et al., NeurIPS 2024.
    """
    _check_callable("score", score)
    _check_sde("sde", sde)
    if method not in POSTERIOR_METHODS:
        raise ValueError(f"method: expected one of {POSTERIOR_METHODS}, got {method!r}")
    scale = _check_scale("scale", scale)
    if isinstance(measurement, LinearMeasurement):
        if method == "dps" and zeta is None and isinstance(measurement.noise_std, float) and measurement.noise_std == 0:
            raise ValueError(
                "measurement: DPS's Gaussian likelihood needs noise_std > 0, got 0 (pass zeta= for the paper's step-size rule)"
            )
    elif callable(measurement):
        if method != "dps":
            raise TypeError(
                f"measurement: method={method!r} needs a LinearMeasurement (its A, A^T and noise std);"
                f" a log-likelihood callable works with method='dps', got {type(measurement).__name__}"
            )
        if zeta is not None:
            raise ValueError("zeta: the step-size rule needs a LinearMeasurement's residual, got a log-likelihood callable")
    else:
        raise TypeError(f"measurement: expected a LinearMeasurement or a log_likelihood(x0) callable, got {type(measurement).__name__}")
    if zeta is not None:
        if method != "dps":
            raise ValueError(f"zeta: DPS's step-size rule, not an option of method={method!r}")
        zeta = _finite_number("zeta", zeta)
        if zeta <= 0:
            raise ValueError(f"zeta: expected a step size > 0, got {zeta!r}")
    data_var = _finite_number("data_var", data_var)
    if data_var <= 0:
        raise ValueError(f"data_var: expected a variance > 0, got {data_var!r}")
    if cg_iters is None:
        cg_iters = {"mmps": 3, "pigdm": 20}.get(method, 0)
    else:
        cg_iters = check_int("cg_iters", cg_iters)
    return _PosteriorScore(score, sde, measurement, method, scale, zeta, data_var, cg_iters)
