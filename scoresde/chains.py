r"""Discrete diffusion chains: DDPM's variance schedule and NCSN's noise levels.

Both are first-class objects that convert exactly to and from the continuous SDEs, so a
network trained on discrete steps drives the continuous solvers, and back:

* `VPSDE(0.1, 20).discretize(1000)` is Ho et al.'s chain (betas 1e-4 ... 0.02) and its
  `to_sde()` is that `VPSDE` again;
* a chain built from any betas or `alphas_cumprod` (for example a pretrained model's)
  converts to a `VPSDE` whose marginals at $t_i = (i+1)T/N$ are exactly the chain's;
* `VESDE(0.01, 50).discretize(L)` gives NCSN's geometric levels $\sigma_i = \sigma(iT/(L-1))$.

Index conventions (noise increases with the index, as time does): DDPM step $i$ holds
$\bar\alpha_i = \prod_{j\le i}(1-\beta_j)$ and sits at $t_i = (i+1)T/N$; NCSN level $i$
holds $\sigma_i$ in ascending order and sits at $t_i = iT/(L-1)$. NCSN's own code labels
levels in descending order: use `L - 1 - i` for such a network.

Tensors are stored in float64 on the CPU; methods that take tensors answer on their
device and in their dtype.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ._checks import values_on_host, append_dims, as_time, check_batched, check_int, check_positive_finite
from .sde import SDE, VESDE, VPSDE, _VPFamily
from .vp_schedules import InterpolatedSchedule, LinearSchedule

__all__ = ["DDPMSchedule", "NCSNSchedule"]


def _as_1d_float64(name: str, values) -> Tensor:
    if isinstance(values, Tensor):
        if values.is_complex() or not torch.is_floating_point(values):
            raise TypeError(f"{name}: expected a real floating-point tensor, got dtype {values.dtype}")
        v = values.detach().to("cpu", torch.float64)
    else:
        try:
            v = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name}: expected a 1-D sequence of floats, got {type(values).__name__}") from None
    if v.ndim != 1 or v.numel() < 1:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence, got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name}: expected finite values, got a NaN or infinity")
    return v


def _gather(table: Tensor, index: Tensor | int, like: Tensor | None, dtype: torch.dtype | None = None) -> Tensor:
    """table[index] on the device and dtype of `like` (else on index's device, in `dtype` or torch's default)."""
    if isinstance(index, bool) or not isinstance(index, (int, Tensor)):
        raise TypeError(f"index: expected an int or an integer tensor, got {type(index).__name__}")
    if isinstance(index, int):
        index = torch.tensor(index)
    if index.is_floating_point() or index.is_complex():
        raise TypeError(f"index: expected an integer tensor, got dtype {index.dtype}")
    n = table.numel()
    if values_on_host(index) and bool(((index < 0) | (index >= n)).any()):
        raise ValueError(f"index: expected integers in [0, {n - 1}], got {index.tolist()}")
    device = like.device if like is not None else index.device
    if like is not None:
        dtype = like.dtype
    elif dtype is None:
        dtype = torch.get_default_dtype()
    return table.to(device)[index.to(device)].to(dtype)


class DDPMSchedule:
    r"""DDPM's discrete chain $q(x_i \mid x_{i-1}) = \mathcal N(\sqrt{1-\beta_i}\,x_{i-1}, \beta_i I)$, $i = 0..N-1$.

    Precomputes (float64) everything the chain and its posterior need:

    * `betas`, `alphas` $= 1-\beta_i$, `alphas_cumprod` $\bar\alpha_i = \prod_{j\le i}\alpha_j$,
      `alphas_cumprod_prev` ($\bar\alpha_{i-1}$, with $\bar\alpha_{-1} = 1$);
    * `sqrt_alphas_cumprod`, `sqrt_one_minus_alphas_cumprod` (the marginal's
      $\alpha$ and $\sigma$);
    * the posterior $q(x_{i-1} \mid x_i, x_0) = \mathcal N(c_1 x_0 + c_2 x_i, \tilde\beta_i I)$:
      `posterior_mean_coef1` $c_1 = \beta_i\sqrt{\bar\alpha_{i-1}}/(1-\bar\alpha_i)$,
      `posterior_mean_coef2` $c_2 = \sqrt{\alpha_i}(1-\bar\alpha_{i-1})/(1-\bar\alpha_i)$,
      `posterior_variance` $\tilde\beta_i = \beta_i(1-\bar\alpha_{i-1})/(1-\bar\alpha_i)$ and
      `posterior_log_variance_clipped` (with $\tilde\beta_0 = 0$ replaced by $\tilde\beta_1$,
      as in Ho et al.'s code).

    Arguments:
        betas: the $\beta_i$, each in $(0, 1]$.
        T: the horizon of the continuous time the steps map to.

    Reference: Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic Models*, NeurIPS 2020,
    eqs. (2), (4), (6), (7).
    """

    def __init__(self, betas: Tensor | Sequence[float], T: float = 1.0, *, source=None):
        betas = _as_1d_float64("betas", betas)
        if not bool(((betas > 0) & (betas <= 1)).all()):
            bad = betas[~((betas > 0) & (betas <= 1))][0].item()
            raise ValueError(f"betas: expected values in (0, 1], got {bad!r}")
        self.T = check_positive_finite("T", T)
        self._source = source
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        one_minus = 1.0 - self.alphas_cumprod
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef2 = self.alphas.sqrt() * (1.0 - self.alphas_cumprod_prev) / one_minus
        if self.N > 1:
            clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        else:
            clipped = self.posterior_variance.clone()
        self.posterior_log_variance_clipped = torch.log(clipped)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, N: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, T: float = 1.0) -> "DDPMSchedule":
        """Ho et al.'s linear schedule: `N` betas evenly spaced from `beta_start` to `beta_end`."""
        N = check_int("N", N)
        beta_start = check_positive_finite("beta_start", beta_start)
        beta_end = check_positive_finite("beta_end", beta_end)
        return cls(torch.linspace(beta_start, beta_end, N, dtype=torch.float64), T=T)

    @classmethod
    def cosine(cls, N: int = 1000, s: float = 0.008, max_beta: float = 0.999, T: float = 1.0) -> "DDPMSchedule":
        r"""Nichol & Dhariwal's cosine schedule: $\beta_i = \min(1 - \bar\alpha(\frac{i+1}{N})/\bar\alpha(\frac{i}{N}), \beta_{\max})$.

        With $\bar\alpha(u) = \cos^2(\frac{u+s}{1+s}\frac{\pi}{2})$ (Nichol & Dhariwal 2021, eq. 17).
        """
        N = check_int("N", N)
        s = check_positive_finite("s", s)
        max_beta = check_positive_finite("max_beta", max_beta)
        u = torch.arange(N + 1, dtype=torch.float64) / N
        abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)
        return cls(betas, T=T)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod, T: float = 1.0, *, source=None) -> "DDPMSchedule":
        r"""The chain with the given $\bar\alpha_i$ (strictly decreasing, in $(0, 1)$), e.g. a pretrained model's."""
        ac = _as_1d_float64("alphas_cumprod", alphas_cumprod)
        if not bool(((ac > 0) & (ac < 1)).all()) or not bool((ac.diff() < 0).all()):
            raise ValueError(
                "alphas_cumprod: expected strictly decreasing values in (0, 1),"
                f" got {ac[:4].tolist()} ... {ac[-2:].tolist()}"
            )
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        return cls(1.0 - ac / prev, T=T, source=source)

    @classmethod
    def from_sde(cls, sde: SDE, N: int) -> "DDPMSchedule":
        r"""The DDPM chain with `N` steps of a VP-type SDE (Song et al. 2021, appendix B).

        The linear schedule gives $\beta_i$ evenly spaced from $\beta_{\min}/N$ to
        $\beta_{\max}/N$, so `DDPMSchedule.from_sde(VPSDE(0.1, 20), 1000)` is Ho et al.'s
        chain (betas 1e-4 ... 0.02). Any other schedule gives the chain whose $\bar\alpha_i$
        are exactly $\alpha_{t_i}^2$ at $t_i = (i+1)T/N$. `to_sde()` of the result gives
        back `sde`. `sde.discretize(N)` is the same call.

        Arguments:
            sde: a [`VPSDE`][scoresde.VPSDE] or [`SubVPSDE`][scoresde.SubVPSDE].
            N: the number of steps, $\ge 1$.
        """
        if not isinstance(sde, _VPFamily):
            raise TypeError(f"sde: expected a VPSDE or SubVPSDE (a DDPM chain is variance-preserving), got {sde!r}")
        N = check_int("N", N)
        s = sde.schedule
        if isinstance(s, LinearSchedule):
            if s.beta_max >= N:
                raise ValueError(
                    f"N: expected more steps than beta_max = {s.beta_max!r} (the last beta is"
                    f" beta_max / N and must stay below 1), got {N!r}"
                )
            betas = torch.linspace(s.beta_min / N, s.beta_max / N, N, dtype=torch.float64)
            return cls(betas, T=sde.T, source=sde)
        t = torch.arange(1, N + 1, dtype=torch.float64) * (sde.T / N)
        return cls.from_alphas_cumprod(torch.exp(2.0 * s.log_alpha(t)), T=sde.T, source=sde)

    # ------------------------------------------------------------------ properties
    @property
    def N(self) -> int:
        """The number of steps."""
        return self.betas.numel()

    def __len__(self) -> int:
        return self.N

    def __repr__(self) -> str:
        return f"DDPMSchedule(N={self.N}, betas={self.betas[0].item():.4g}..{self.betas[-1].item():.4g}, T={self.T})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DDPMSchedule) and self.T == other.T and torch.equal(self.betas, other.betas)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ index <-> time
    def t_of_index(self, index: Tensor | int) -> Tensor:
        """The continuous time $t_i = (i+1)T/N$ of step `index` (float64, on index's device)."""
        if isinstance(index, int) and not isinstance(index, bool):
            index = torch.tensor(index)
        return _gather(torch.arange(1, self.N + 1, dtype=torch.float64) * (self.T / self.N), index, None, torch.float64)

    def index_of_t(self, t: float | Tensor) -> Tensor:
        r"""The (fractional) step index $i = tN/T - 1$ of time `t`, the inverse of `t_of_index`.

        Networks trained on integer steps usually take `index_of_t(t).round().long()`;
        networks that accept fractional inputs (as DPM-Solver's discrete models) take it as is.
        """
        t = as_time(t)  # a network's time input, called every step: times are checked at the entry points
        return t * (self.N / self.T) - 1.0

    # ------------------------------------------------------------------ the chain
    def marginal(self, index: Tensor | int, like: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""$(\sqrt{\bar\alpha_i}, \sqrt{1-\bar\alpha_i})$ at step `index` (shaped like it)."""
        return (
            _gather(self.sqrt_alphas_cumprod, index, like),
            _gather(self.sqrt_one_minus_alphas_cumprod, index, like),
        )

    def q_sample(self, x0: Tensor, index: Tensor | int, noise: Tensor | None = None, *, generator=None) -> Tensor:
        r"""Draw $x_i = \sqrt{\bar\alpha_i}\,x_0 + \sqrt{1-\bar\alpha_i}\,\varepsilon$ (Ho et al. eq. 4)."""
        x0 = check_batched("x0", x0)
        a, s = self.marginal(index, like=x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise: expected the shape of x0, {tuple(x0.shape)}, got {tuple(noise.shape)}")
        return append_dims(a, x0.ndim) * x0 + append_dims(s, x0.ndim) * noise

    def posterior(self, x0: Tensor, x_t: Tensor, index: Tensor | int) -> tuple[Tensor, Tensor]:
        r"""Mean and variance of $q(x_{i-1} \mid x_i, x_0)$ (Ho et al. eqs. 6-7); the variance is `(B,)` or 0-d."""
        x0 = check_batched("x0", x0)
        x_t = check_batched("x_t", x_t)
        if x0.shape != x_t.shape:
            raise ValueError(f"x_t: expected the shape of x0, {tuple(x0.shape)}, got {tuple(x_t.shape)}")
        c1 = append_dims(_gather(self.posterior_mean_coef1, index, x0), x0.ndim)
        c2 = append_dims(_gather(self.posterior_mean_coef2, index, x0), x0.ndim)
        return c1 * x0 + c2 * x_t, _gather(self.posterior_variance, index, x0)

    # ------------------------------------------------------------------ back to the SDE
    def is_linear(self, rtol: float = 1e-6) -> bool:
        """Whether the betas are evenly spaced (to `rtol` of the largest beta)."""
        if self.N < 2:
            return True
        ref = torch.linspace(self.betas[0].item(), self.betas[-1].item(), self.N, dtype=torch.float64)
        return bool(((self.betas - ref).abs() <= rtol * self.betas.abs().max()).all())

    def to_sde(self, kind: str = "auto"):
        r"""The continuous VP SDE of this chain.

        * `kind="linear"`: the linear `VPSDE(beta_min=N beta_0, beta_max=N beta_{N-1})`
          of Song et al., whose `discretize(N)` gives these betas back (linear chains only);
        * `kind="interpolated"`: a `VPSDE` with $\log\alpha$ piecewise linear through
          $(t_i, \tfrac12\log\bar\alpha_i)$, exact at every step for any chain;
        * `kind="auto"` (default): the SDE this chain was discretised from, if any; else
          `"linear"` for evenly spaced betas; else `"interpolated"`.
        """
        if kind not in ("auto", "linear", "interpolated"):
            raise ValueError(f"kind: expected 'auto', 'linear' or 'interpolated', got {kind!r}")
        if kind == "auto" and self._source is not None:
            return self._source
        if kind == "linear" or (kind == "auto" and self.is_linear()):
            if not self.is_linear():
                raise ValueError("kind: 'linear' needs evenly spaced betas; use kind='interpolated'")
            return VPSDE(self.betas[0].item() * self.N, self.betas[-1].item() * self.N, T=self.T)
        return VPSDE(schedule=self.interpolated_schedule())

    def interpolated_schedule(self) -> InterpolatedSchedule:
        r"""The [`InterpolatedSchedule`][scoresde.vp_schedules.InterpolatedSchedule] through $(t_i, \tfrac12\log\bar\alpha_i)$."""
        t = torch.arange(0, self.N + 1, dtype=torch.float64) * (self.T / self.N)
        la = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.log(self.alphas_cumprod)])
        return InterpolatedSchedule(t, la)


class NCSNSchedule:
    r"""NCSN's noise levels $\sigma_0 < \sigma_1 < \dots < \sigma_{L-1}$ (stored ascending).

    NCSN perturbs data with $\mathcal N(0, \sigma_i^2 I)$ at each level; with geometric
    levels it is the VE SDE sampled at $t_i = iT/(L-1)$.

    Arguments:
        sigmas: the noise levels, strictly increasing and > 0 (pass NCSN's descending list
            through `sorted` or `.flip(0)`).
        T: the horizon of the continuous time the levels map to.

    Reference: Song & Ermon, *Generative Modeling by Estimating Gradients of the Data
    Distribution*, NeurIPS 2019; Song et al. ICLR 2021, appendix B.
    """

    def __init__(self, sigmas: Tensor | Sequence[float], T: float = 1.0):
        sigmas = _as_1d_float64("sigmas", sigmas)
        if sigmas.numel() < 2 or not bool((sigmas > 0).all()) or not bool((sigmas.diff() > 0).all()):
            raise ValueError(
                f"sigmas: expected at least 2 strictly increasing positive levels, got {sigmas[:4].tolist()}..."
            )
        self.sigmas = sigmas
        self.T = check_positive_finite("T", T)

    @classmethod
    def geometric(cls, sigma_min: float, sigma_max: float, L: int, T: float = 1.0) -> "NCSNSchedule":
        r"""$L$ levels in geometric progression from `sigma_min` to `sigma_max`."""
        sigma_min = check_positive_finite("sigma_min", sigma_min)
        sigma_max = check_positive_finite("sigma_max", sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max: expected a value > sigma_min = {sigma_min!r}, got {sigma_max!r}")
        L = check_int("L", L, minimum=2)
        u = torch.arange(L, dtype=torch.float64) / (L - 1)
        sigmas = sigma_min * torch.exp(u * math.log(sigma_max / sigma_min))
        sigmas[0], sigmas[-1] = sigma_min, sigma_max
        return cls(sigmas, T=T)

    @classmethod
    def from_sde(cls, sde: SDE, L: int) -> "NCSNSchedule":
        r"""NCSN's noise levels $\sigma_i = \sigma(iT/(L-1))$, $i = 0..L-1$, of a VE SDE (geometric, ascending).

        `to_sde()` of the result gives back `sde`; `sde.discretize(L)` is the same call.

        Arguments:
            sde: a [`VESDE`][scoresde.VESDE].
            L: the number of levels, $\ge 2$.
        """
        if not isinstance(sde, VESDE):
            raise TypeError(f"sde: expected a VESDE (NCSN's levels are its geometric noise levels), got {sde!r}")
        L = check_int("L", L, minimum=2)
        return cls.geometric(sde.sigma_min, sde.sigma_max, L, T=sde.T)

    @property
    def L(self) -> int:
        """The number of noise levels."""
        return self.sigmas.numel()

    def __len__(self) -> int:
        return self.L

    def __repr__(self) -> str:
        return f"NCSNSchedule(L={self.L}, sigmas={self.sigmas[0].item():.4g}..{self.sigmas[-1].item():.4g}, T={self.T})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NCSNSchedule) and self.T == other.T and torch.equal(self.sigmas, other.sigmas)

    __hash__ = None  # type: ignore[assignment]

    @property
    def ratio(self) -> float:
        r"""The geometric ratio $\gamma = \sigma_{i+1}/\sigma_i$ (mean over levels)."""
        return math.exp(math.log(self.sigmas[-1].item() / self.sigmas[0].item()) / (self.L - 1))

    def is_geometric(self, rtol: float = 1e-9) -> bool:
        """Whether the levels are in geometric progression (log-ratios equal to `rtol`)."""
        r = torch.log(self.sigmas).diff()
        return bool(((r - r.mean()).abs() <= rtol * r.mean().abs() + 1e-15).all())

    def sigma(self, index: Tensor | int, like: Tensor | None = None) -> Tensor:
        r"""$\sigma_i$ at level `index`."""
        return _gather(self.sigmas, index, like)

    def t_of_index(self, index: Tensor | int) -> Tensor:
        """The continuous time $t_i = iT/(L-1)$ of level `index` (float64, on index's device)."""
        if isinstance(index, int) and not isinstance(index, bool):
            index = torch.tensor(index)
        return _gather(torch.arange(self.L, dtype=torch.float64) * (self.T / (self.L - 1)), index, None, torch.float64)

    def index_of_t(self, t: float | Tensor) -> Tensor:
        """The (fractional) level $i = t(L-1)/T$ of time `t`, the inverse of `t_of_index`."""
        t = as_time(t)  # a network's time input, called every step: times are checked at the entry points
        return t * ((self.L - 1) / self.T)

    def perturb(self, x0: Tensor, index: Tensor | int, noise: Tensor | None = None, *, generator=None) -> Tensor:
        r"""Draw $x = x_0 + \sigma_i\,\varepsilon$."""
        x0 = check_batched("x0", x0)
        s = self.sigma(index, like=x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise: expected the shape of x0, {tuple(x0.shape)}, got {tuple(noise.shape)}")
        return x0 + append_dims(s, x0.ndim) * noise

    def to_sde(self):
        """The `VESDE(sigma_min=sigmas[0], sigma_max=sigmas[-1], T)` these levels discretise (geometric levels only)."""
        if not self.is_geometric(rtol=1e-6):
            raise ValueError(
                "sigmas: the VE SDE has geometric noise levels; these are not in geometric progression"
            )
        return VESDE(self.sigmas[0].item(), self.sigmas[-1].item(), T=self.T)


# ---------------------------------------------------------------------- conveniences on the SDEs
# The SDE classes are purely continuous and never import this module; the discretisations
# live here, next to the chains they build, and are offered as methods of the SDEs
# themselves. `import scoresde` (which any `scoresde.*` import runs first) imports this
# module, so the methods are always present.


def _discretize_vp(self: _VPFamily, N: int) -> DDPMSchedule:
    r"""The DDPM chain with `N` steps: [`DDPMSchedule.from_sde(self, N)`][scoresde.chains.DDPMSchedule.from_sde]."""
    return DDPMSchedule.from_sde(self, N)


def _discretize_ve(self: VESDE, N: int) -> NCSNSchedule:
    r"""NCSN's `N` geometric levels: [`NCSNSchedule.from_sde(self, N)`][scoresde.chains.NCSNSchedule.from_sde]."""
    return NCSNSchedule.from_sde(self, check_int("N", N, minimum=2))


_discretize_vp.__name__ = _discretize_ve.__name__ = "discretize"
_VPFamily.discretize = _discretize_vp  # VPSDE and SubVPSDE
VESDE.discretize = _discretize_ve
