r"""Noise sources: Brownian increments for SDE solvers, normal/uniform draws for MCMC.

Three sources, one protocol (`NoiseSource.bind`):

* `GeneratorNoise(generator)`: fresh increments $\Delta W \sim N(0, |\Delta t|)$ per step from
  an injected `torch.Generator`. The fastest; reproducible given the generator's seed, the
  grid and the batch.
* `SeededNoise(seed)`: one counter-based random stream per sample. With a list of seeds,
  one per sample, a sample's increments depend only on its own seed and the step index,
  never on the batch it is in (batch-size invariance).
* `BrownianTree(t0, t1, seed)`: a Brownian path $W(t)$ defined for every $t$ in
  $[t_0, t_1]$ by a virtual Brownian tree (Brownian-bridge bisection, Gaines & Lyons 1997;
  Li et al. 2020): increments over any interval are consistent with each other, so the
  same path can be integrated at any step size (strong-order tests, grid refinement),
  in either time direction; also per-sample seeds, and optionally the space-time Lévy
  area needed by strong-order-1.5 schemes.

Random numbers for `SeededNoise` and `BrownianTree` come from a counter-based generator
(SplitMix64 words keyed by 64-bit hashes of (seed, sample index, draw counter), turned into
normals by the Box-Muller transform), computed with int64 tensor operations on the state's
device: no host round trip, and the same integers on CPU and GPU. `PerSampleGenerators`
(one `torch.Generator` per sample) and `as_noise_source` (what a sampling call's
`generator=` may be) live here too.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ._utils import as_real, describe

__all__ = ["NoiseSource", "GeneratorNoise", "SeededNoise", "BrownianTree", "PerSampleGenerators", "as_noise",
           "as_noise_source", "check_seed", "SEED_RANGE"]

Increment = Callable[[float, float], "Tensor | tuple[Tensor, Tensor]"]

# ----------------------------------------------------------------------------------------
# Counter-based random numbers
# ----------------------------------------------------------------------------------------
#
# Every number is SplitMix64 (Steele, Lea & Flood 2014) evaluated at a counter: the 64-bit
# finaliser H (a bijection of 64-bit words) applied to `key + k * GAMMA`. Keys are derived by
# the same finaliser from (seed, sample index) and then from (key, draw counter, domain), so
# a number is a function of (seed, sample, draw, element) alone. All arithmetic is on int64
# tensors, which wrap modulo 2**64 (two's complement) on every torch backend; right shifts are
# made logical by masking the sign-extended bits. Keys are 64-bit, so among n streams a
# repeated key has probability about n**2 / 2**65 (1e-5 for 200 seeds x 65,536 samples).

_M64 = 0xFFFFFFFFFFFFFFFF
#: the golden-ratio increment of SplitMix64 (odd)
_GAMMA = 0x9E3779B97F4A7C15
#: the multipliers of SplitMix64's finaliser (Stafford's "Mix13")
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_DOMAIN_SEEDED = 0x5EED5EED
_DOMAIN_TREE = 0x7EE7B0B0
_DOMAIN_UNIFORM = 0x0F0F1234
_DOMAIN_ONE_SEED = 0x51ED
_DOMAIN_SEED_LIST = 0x5EEDC0DE
#: the range of seeds: 64-bit unsigned integers
SEED_RANGE = (0, 2 ** 64)


def _signed(x: int) -> int:
    """A 64-bit word as the int64 value with the same bits."""
    x &= _M64
    return x - 2 ** 64 if x >= 2 ** 63 else x


_GAMMA_S, _MIX1_S, _MIX2_S = _signed(_GAMMA), _signed(_MIX1), _signed(_MIX2)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 words by k bits."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64_(x: Tensor) -> Tensor:
    """SplitMix64's finaliser, in place on an int64 tensor (a bijection of 64-bit words)."""
    x ^= _shr(x, 30)
    x.mul_(_MIX1_S)
    x ^= _shr(x, 27)
    x.mul_(_MIX2_S)
    x ^= _shr(x, 31)
    return x


def _hash64(x: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference of `_mix64_`); returns 64 bits."""
    z = x & _M64
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


def _word(*words: int) -> int:
    """A 64-bit hash of a few 64-bit words (chained SplitMix64 steps)."""
    h = 0
    for w in words:
        h = _hash64(h + _GAMMA + (w & _M64))
    return h


_OFFSETS: OrderedDict = OrderedDict()


def _element_offsets(n: int, device: torch.device) -> Tensor:
    """`(k + 1) * GAMMA` for k = 0..n-1 as int64 words (cached per size and device)."""
    key = (n, str(device))
    h = _OFFSETS.get(key)
    if h is None:
        h = torch.arange(1, n + 1, dtype=torch.int64, device=device).mul_(_GAMMA_S)
        _OFFSETS[key] = h
        if len(_OFFSETS) > 16:
            _OFFSETS.popitem(last=False)
    else:
        _OFFSETS.move_to_end(key)
    return h


def check_seed(name: str, seed: Any) -> Any:
    """An int seed in [0, 2**64), or a 1-D int64 tensor of per-sample seeds (kept on the CPU).

    Seeds outside the range are refused (never reduced modulo 2**64, which would make
    `2**64` the same seed as `0`). A sequence of Python ints may use the whole range;
    an integer tensor holds seeds in [0, 2**63).
    """
    lo, hi = SEED_RANGE
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        seed = int(seed)
        if not lo <= seed < hi:
            raise ValueError(f"{name}: expected a seed in [0, 2**64), got {seed}")
        return seed
    if isinstance(seed, Tensor):
        if seed.ndim != 1 or seed.numel() == 0 or seed.is_floating_point() or seed.is_complex() \
                or seed.dtype == torch.bool:
            raise ValueError(f"{name}: expected an int or a 1-D integer tensor of per-sample seeds, "
                             f"got {describe(seed)}")
        seed = seed.detach().to("cpu", torch.int64)
        if bool((seed < 0).any()):
            raise ValueError(f"{name}: expected seeds in [0, 2**64), got a negative seed "
                             f"{int(seed[seed < 0][0])} in the tensor")
        return seed
    if isinstance(seed, (list, tuple)) and seed and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seed):
        vals = []
        for s in seed:
            s = int(s)
            if not lo <= s < hi:
                raise ValueError(f"{name}: expected seeds in [0, 2**64), got {s}")
            vals.append(_signed(s))
        return torch.tensor(vals, dtype=torch.int64)
    raise TypeError(f"{name}: expected an int or a sequence of ints (one seed per sample), got {describe(seed)}")


_check_seed = check_seed


def _sample_keys(seed: Any, batch: int, device: torch.device, who: str) -> Tensor:
    """One 64-bit key per sample, shape `(B,)` int64.

    One int seed $s$: key$_b$ = H(w(s) + (b + 1) GAMMA), the SplitMix64 stream of the seed's word
    w(s), one word per sample index. A sequence of seeds: key$_b$ = H(w'(s_b)), a function of
    sample b's own seed only.
    """
    if isinstance(seed, int):
        keys = _element_offsets(batch, torch.device(device)).clone()
        keys.add_(_signed(_word(seed, _DOMAIN_ONE_SEED)))
        return _mix64_(keys)
    seeds = seed
    if seeds.shape[0] != batch:
        raise ValueError(f"noise: {who} holds {seeds.shape[0]} per-sample seeds, but the state has batch size "
                         f"{batch}; pass one seed per sample")
    keys = seeds.to(device).clone()
    keys.add_(_signed(_word(_DOMAIN_SEED_LIST)))
    _mix64_(keys)
    keys.add_(_GAMMA_S)
    return _mix64_(keys)


def _bits(keys: Tensor, counter: int, domain: int, n: int) -> Tensor:
    """`(B, n)` pseudo-random 64-bit words (int64) for draw number `counter`.

    The draw's key is H(key + w(counter, domain)); its words are SplitMix64's stream from it,
    H(draw key + (k + 1) GAMMA) for k = 0..n-1.
    """
    k = keys + _signed(_word(counter, domain))
    _mix64_(k)
    u = k.unsqueeze(1) + _element_offsets(n, keys.device)
    return _mix64_(u)


def _unit(u: Tensor, dtype: torch.dtype) -> Tensor:
    """Map 64-bit words to floats uniform in the open interval (0, 1): the top 53 bits for
    float64, the top 24 for float32 (so a float32 draw is the float64 one rounded)."""
    if dtype == torch.float64:
        return _shr(u, 11).to(torch.float64).add_(0.5).mul_(2.0 ** -53)
    return _shr(u, 40).to(torch.float32).add_(0.5).mul_(2.0 ** -24)


def counter_normal(keys: Tensor, counter: int, domain: int, sample_shape: Sequence[int],
                   dtype: torch.dtype) -> Tensor:
    """Standard normals of shape `(B, *sample_shape)`: Box-Muller on counter-based bits.

    Values for sample `b` depend only on `keys[b]`, `counter`, `domain` and the element
    index, so they do not depend on the batch around them.
    """
    d = math.prod(sample_shape)
    p = (d + 1) // 2
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u = _unit(_bits(keys, counter, domain, 2 * p), work)
    u1, u2 = u[:, :p], u[:, p:]
    r = u1.log_().mul_(-2.0).sqrt_()
    theta = u2.mul_(2.0 * math.pi)
    z = torch.cat([r * torch.cos(theta), r.mul_(torch.sin(theta))], dim=1)
    if z.shape[1] != d:
        z = z[:, :d]
    return z.reshape((keys.shape[0], *sample_shape)).to(dtype)


def counter_uniform(keys: Tensor, counter: int, domain: int, sample_shape: Sequence[int],
                    dtype: torch.dtype) -> Tensor:
    """Uniforms in (0, 1) of shape `(B, *sample_shape)` from counter-based bits."""
    d = math.prod(sample_shape)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return _unit(_bits(keys, counter, domain ^ _DOMAIN_UNIFORM, d), work).reshape(
        (keys.shape[0], *sample_shape)).to(dtype)


# ----------------------------------------------------------------------------------------
# Protocol
# ----------------------------------------------------------------------------------------


def _levy_from_normals(dw: Tensor, xi: Tensor, h: float) -> Tensor:
    r"""$\Delta Z = \int_{t}^{t+h} (W_s - W_t)\,ds = h(\Delta W / 2 + H)$, $H \sim N(0, |h|/12)$."""
    return (xi * math.sqrt(abs(h) / 12.0)).add_(dw, alpha=0.5).mul_(h)


class NoiseSource:
    r"""Base class of noise sources.

    A source is *bound* once per integration to the noise shape, dtype and device; the
    bound callable `increment(t_cur, t_next)` returns the Brownian increment
    $\Delta W = W(t_{next}) - W(t_{cur})$ (variance $|t_{next} - t_{cur}|$ per element; times
    may decrease), or with `levy_area=True` the pair $(\Delta W, \Delta Z)$ where
    $\Delta Z = \int_{t_{cur}}^{t_{next}} (W_s - W_{t_{cur}})\,ds$ (a signed integral).

    Sources that can also serve Markov chain samplers implement `standard_normal` and
    `uniform`.
    """

    #: whether `bind(..., levy_area=True)` is supported
    supports_levy_area: bool = True

    def bind(self, shape: torch.Size, dtype: torch.dtype, device: torch.device, *,
             levy_area: bool = False, span: tuple[float, float] | None = None) -> Increment:
        """Return `increment(t_cur, t_next)` for noise of `shape`; validates compatibility.

        Arguments:
            shape: the noise shape `(B, ...)` (the state's shape, or `(B, 1, ..., 1)` for
                scalar noise).
            dtype, device: of the returned increments.
            levy_area: also return the space-time Lévy area $\\Delta Z$.
            span: the `(min, max)` times that will be queried, for validation.
        """
        raise NotImplementedError

    def snapshot(self, device: torch.device) -> Any:
        """A token from which `restore` replays the same increments, or None if the source cannot
        replay (then a failed run is reported without locating the step)."""
        return None

    def restore(self, token: Any) -> None:
        """Rewind to a `snapshot`."""

    def standard_normal(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A tensor of independent standard normals of `shape` `(B, ...)`."""
        raise TypeError(f"{type(self).__name__} does not provide standard normals; "
                        f"use GeneratorNoise or SeededNoise")

    def uniform(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A tensor of independent uniforms in (0, 1) of `shape` `(B, ...)`."""
        raise TypeError(f"{type(self).__name__} does not provide uniforms; use GeneratorNoise or SeededNoise")


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cpu":
        return True
    ia = a.index if a.index is not None else torch.cuda.current_device() if a.type == "cuda" else 0
    ib = b.index if b.index is not None else torch.cuda.current_device() if b.type == "cuda" else 0
    return ia == ib


class GeneratorNoise(NoiseSource):
    r"""Brownian increments drawn step by step from an injected `torch.Generator`.

    $\Delta W = \sqrt{|\Delta t|}\,\xi$ with $\xi \sim N(0, I)$; with Lévy area,
    $\Delta Z = \Delta t\,(\Delta W/2 + \sqrt{|\Delta t|/12}\,\eta)$ with an independent $\eta$
    (Kloeden & Platen 1992, §10.4). One kernel per step: the fastest source.

    Arguments:
        generator: a `torch.Generator` on the state's device, or `None` for torch's global
            generator (so `torch.manual_seed` controls it).

    Results are reproducible for a given generator seed, grid and batch; they change with
    the batch size. For batch-size invariance use `SeededNoise` or `BrownianTree`.
    """

    def __init__(self, generator: torch.Generator | None = None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {describe(generator)}")
        self.generator = generator

    def _check_device(self, device: torch.device) -> None:
        g = self.generator
        if g is not None and not _same_device(g.device, device):
            raise ValueError(f"generator: it lives on {g.device} but the state is on {device}: "
                             f"create it with torch.Generator(device={str(device)!r})")

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        self._check_device(device)
        g = self.generator
        shape = tuple(shape)
        if not levy_area:
            def increment(t_cur: float, t_next: float) -> Tensor:
                return torch.empty(shape, dtype=dtype, device=device).normal_(
                    0.0, math.sqrt(abs(t_next - t_cur)), generator=g)
            return increment

        def increment_levy(t_cur: float, t_next: float):
            h = t_next - t_cur
            xi = torch.randn((2, *shape), dtype=dtype, device=device, generator=g)
            dw = xi[0].mul_(math.sqrt(abs(h)))
            return dw, _levy_from_normals(dw, xi[1], h)
        return increment_levy

    def snapshot(self, device):
        if self.generator is not None:
            return ("generator", self.generator.get_state())
        device = torch.device(device)
        if device.type == "cuda":
            return ("cuda", device, torch.cuda.get_rng_state(device))
        if device.type == "cpu":
            return ("cpu", torch.get_rng_state())
        return None

    def restore(self, token):
        kind = token[0]
        if kind == "generator":
            self.generator.set_state(token[1])
        elif kind == "cuda":
            torch.cuda.set_rng_state(token[2], token[1])
        else:
            torch.set_rng_state(token[1])

    def standard_normal(self, shape, dtype, device):
        self._check_device(device)
        return torch.randn(tuple(shape), dtype=dtype, device=device, generator=self.generator)

    def uniform(self, shape, dtype, device):
        self._check_device(device)
        return torch.rand(tuple(shape), dtype=dtype, device=device, generator=self.generator)

    def __repr__(self):
        return "GeneratorNoise()" if self.generator is None else "GeneratorNoise(<generator>)"


class SeededNoise(NoiseSource):
    r"""Per-sample random streams from seeds: batch-size invariant noise.

    Draw number $k$ for sample $b$ is a deterministic function of (seed$_b$, $k$): a
    counter-based generator evaluated with tensor ops on the state's device. With one
    seed per sample, a sample's noise, and so its whole trajectory, is the same in any
    batch; the same seeds give the same numbers on CPU and GPU (up to the rounding of
    `log`/`cos`).

    Arguments:
        seed: an int in $[0, 2^{64})$ (sample `b` then uses a stream keyed by `(seed, b)`), or
            a sequence / 1-D integer tensor with one seed per sample (seeds outside the range
            are refused, not reduced modulo $2^{64}$).
        start: the draw counter to start from (each increment, normal or uniform batch
            consumes one).

    The source is stateful like a generator: successive draws continue the stream.
    Costs about 30 elementwise integer operations per draw (vs one for `GeneratorNoise`).
    """

    def __init__(self, seed: int | Sequence[int] | Tensor, *, start: int = 0):
        self.seed = _check_seed("seed", seed)
        self.counter = int(start)
        self._keys: dict = {}

    @property
    def n_seeds(self) -> int | None:
        """The number of per-sample seeds, or None for a single seed."""
        return None if isinstance(self.seed, int) else int(self.seed.shape[0])

    def keys(self, batch: int, device: torch.device) -> Tensor:
        """The per-sample keys for a batch of size `batch` (cached)."""
        k = (batch, str(device))
        if k not in self._keys:
            self._keys[k] = _sample_keys(self.seed, batch, torch.device(device), "SeededNoise")
        return self._keys[k]

    def _next(self) -> int:
        c = self.counter
        self.counter += 1
        return c

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        shape = tuple(shape)
        keys = self.keys(shape[0], device)
        sample_shape = shape[1:]
        if not levy_area:
            def increment(t_cur: float, t_next: float) -> Tensor:
                z = counter_normal(keys, self._next(), _DOMAIN_SEEDED, sample_shape, dtype)
                return z.mul_(math.sqrt(abs(t_next - t_cur)))
            return increment

        def increment_levy(t_cur: float, t_next: float):
            h = t_next - t_cur
            z = counter_normal(keys, self._next(), _DOMAIN_SEEDED, (2, *sample_shape), dtype)
            dw = z[:, 0].mul(math.sqrt(abs(h)))
            return dw, _levy_from_normals(dw, z[:, 1], h)
        return increment_levy

    def snapshot(self, device):
        return self.counter

    def restore(self, token):
        self.counter = token

    def standard_normal(self, shape, dtype, device):
        shape = tuple(shape)
        return counter_normal(self.keys(shape[0], device), self._next(), _DOMAIN_SEEDED, shape[1:], dtype)

    def uniform(self, shape, dtype, device):
        shape = tuple(shape)
        return counter_uniform(self.keys(shape[0], device), self._next(), _DOMAIN_SEEDED, shape[1:], dtype)

    def __repr__(self):
        s = self.seed if isinstance(self.seed, int) else f"<{self.seed.shape[0]} seeds>"
        return f"SeededNoise({s}, start={self.counter})"


# ----------------------------------------------------------------------------------------
# Brownian tree
# ----------------------------------------------------------------------------------------


def _split_coefficients(r: float):
    r"""Conditional law of $(W_{0,r}, Z_{0,r})$ given $(W_{0,1}, Z_{0,1})$ on the unit interval.

    With $Z_{a,b} = \int_a^b (W_s - W_a)\,ds$, the pair over $[0, r]$ and over $[r, 1]$ are
    independent Gaussians with covariance $[[h, h^2/2], [h^2/2, h^3/3]]$, and
    $W_{0,1} = W_1 + W_2$, $Z_{0,1} = Z_1 + Z_2 + (1 - r) W_1$. Gaussian conditioning gives
    the mean map `M` (2x2) and a Cholesky factor `L` (lower 2x2) of the conditional
    covariance: $(W_1, Z_1) = M (W, Z) + L \xi$. Brownian scaling extends it to any length.
    """
    h1, h2 = r, 1.0 - r
    s1 = ((h1, h1 * h1 / 2), (h1 * h1 / 2, h1 ** 3 / 3))
    s2 = ((h2, h2 * h2 / 2), (h2 * h2 / 2, h2 ** 3 / 3))
    # C = Cov(X1, Y) = S1 A1^T with A1 = [[1, 0], [h2, 1]]
    c = ((s1[0][0], h2 * s1[0][0] + s1[0][1]), (s1[1][0], h2 * s1[1][0] + s1[1][1]))
    # Sigma_Y = A1 S1 A1^T + S2
    a1 = ((1.0, 0.0), (h2, 1.0))

    def mm(x, y):
        return tuple(tuple(sum(x[i][k] * y[k][j] for k in range(2)) for j in range(2)) for i in range(2))

    def tr(x):
        return ((x[0][0], x[1][0]), (x[0][1], x[1][1]))

    sy = mm(mm(a1, s1), tr(a1))
    sy = tuple(tuple(sy[i][j] + s2[i][j] for j in range(2)) for i in range(2))
    det = sy[0][0] * sy[1][1] - sy[0][1] * sy[1][0]
    sy_inv = ((sy[1][1] / det, -sy[0][1] / det), (-sy[1][0] / det, sy[0][0] / det))
    m = mm(c, sy_inv)
    mc = mm(m, tr(c))
    cov = tuple(tuple(s1[i][j] - mc[i][j] for j in range(2)) for i in range(2))
    l00 = math.sqrt(max(cov[0][0], 0.0))
    l10 = cov[1][0] / l00 if l00 > 0 else 0.0
    l11 = math.sqrt(max(cov[1][1] - l10 * l10, 0.0))
    return m, ((l00, 0.0), (l10, l11))


_HALF_M, _HALF_L = _split_coefficients(0.5)


class _Node:
    __slots__ = ("id", "a", "b", "wa", "za", "wb", "zb")

    def __init__(self, id, a, b, wa, za, wb, zb):
        self.id, self.a, self.b = id, a, b
        self.wa, self.za, self.wb, self.zb = wa, za, wb, zb


class _TreeEvaluator:
    """Evaluates (W(t), Z(t)) of one tree for one batch/shape/device, caching the last
    root-to-leaf path so that nearby successive queries only descend the last few levels."""

    def __init__(self, tree: "BrownianTree", shape: tuple, device: torch.device):
        self.tree = tree
        self.levy = tree.levy_area
        self.keys = _sample_keys(tree.seed, shape[0], device, "BrownianTree")
        self.sample_shape = shape[1:]
        self.n_draws = 0
        f64 = torch.float64
        t0, t1 = tree.t0, tree.t1
        h = t1 - t0
        zero = torch.zeros(shape, dtype=f64, device=device)
        # Counter 0 draws the root's end values; node k >= 1 (heap numbering) draws its midpoint.
        if self.levy:
            xi = self._normal(0, 2)
            w1 = xi[:, 0].mul(math.sqrt(h))
            z1 = _levy_from_normals(w1, xi[:, 1], h)
        else:
            w1 = self._normal(0, 1).mul_(math.sqrt(h))
            z1 = None
        self.path = [_Node(1, t0, t1, zero, zero if self.levy else None, w1, z1)]
        self.memo: OrderedDict = OrderedDict()

    def _normal(self, node_id: int, k: int) -> Tensor:
        self.n_draws += 1
        shape = self.sample_shape if k == 1 else (k, *self.sample_shape)
        return counter_normal(self.keys, node_id, _DOMAIN_TREE, shape, torch.float64)

    def _split(self, node: _Node):
        """Values at the midpoint of `node`, drawn from the Brownian bridge given its ends."""
        h = node.b - node.a
        dw = node.wb - node.wa
        if not self.levy:
            xi = self._normal(node.id, 1)
            return xi.mul_(0.5 * math.sqrt(h)).add_(dw, alpha=0.5).add_(node.wa), None
        (m00, m01), (m10, m11) = _HALF_M
        (l00, _), (l10, l11) = _HALF_L
        dz = node.zb - node.za - h * node.wa
        xi = self._normal(node.id, 2)
        x1, x2 = xi[:, 0], xi[:, 1]
        w1 = (x1 * (l00 * math.sqrt(h))).add_(dw, alpha=m00).add_(dz, alpha=m01 / h)
        z1 = (x1 * (l10 * h ** 1.5)).add_(x2, alpha=l11 * h ** 1.5).add_(dw, alpha=h * m10).add_(dz, alpha=m11)
        wm = w1.add_(node.wa)
        zm = z1.add_(node.za).add_(node.wa, alpha=h / 2)
        return wm, zm

    def _interpolate(self, node: _Node, t: float):
        """Conditional mean of (W(t), Z(t)) inside a leaf interval."""
        h = node.b - node.a
        r = (t - node.a) / h
        dw = node.wb - node.wa
        if not self.levy:
            return torch.lerp(node.wa, node.wb, r), None
        m, _ = _split_coefficients(r)
        dz = node.zb - node.za - h * node.wa
        w1 = (dw * m[0][0]).add_(dz, alpha=m[0][1] / h)
        z1 = (dw * (h * m[1][0])).add_(dz, alpha=m[1][1])
        return w1.add_(node.wa), z1.add_(node.za).add_(node.wa, alpha=t - node.a)

    def value(self, t: float):
        memo = self.memo
        hit = memo.get(t)
        if hit is not None:
            return hit
        path = self.path
        while len(path) > 1 and not (path[-1].a <= t <= path[-1].b):
            path.pop()
        node = path[-1]
        tol = self.tree.tol
        while True:
            if t == node.a:
                out = (node.wa, node.za)
                break
            if t == node.b:
                out = (node.wb, node.zb)
                break
            mid = node.a + 0.5 * (node.b - node.a)
            if node.b - node.a <= tol or not node.a < mid < node.b:
                out = self._interpolate(node, t)
                break
            wm, zm = self._split(node)
            if t <= mid:
                node = _Node(2 * node.id, node.a, mid, node.wa, node.za, wm, zm)
            else:
                node = _Node(2 * node.id + 1, mid, node.b, wm, zm, node.wb, node.zb)
            path.append(node)
        memo[t] = out
        if len(memo) > 4:
            memo.popitem(last=False)
        return out

    def increment(self, ta: float, tb: float, levy_area: bool):
        wa, za = self.value(ta)
        wb, zb = self.value(tb)
        dw = wb - wa
        if not levy_area:
            return dw
        return dw, (zb - za).sub_(wa, alpha=tb - ta)


class BrownianTree(NoiseSource):
    r"""A Brownian path on $[t_0, t_1]$, consistent for queries at any times.

    $W(t_0) = 0$, $W(t_1) \sim N(0, t_1 - t_0)$, and each dyadic midpoint is drawn from the
    Brownian bridge between its interval's ends, with randomness keyed by
    (seed, node): a *virtual* tree, so nothing is stored but a cache of the last
    root-to-leaf path (Gaines & Lyons 1997; Li, Wong, Chen & Duvenaud 2020). A query
    descends until it hits a node time exactly or the interval is shorter than `tol`,
    where it returns the bridge's conditional mean. Consequences:

    * increments are additive: $W(a,c) = W(a,b) + W(b,c)$ for any $a, b, c$;
    * the path does not depend on the order or resolution of queries, so grids that
      refine each other see the same path (exactly at dyadic times of $[t_0, t_1]$, within
      a bridge error of standard deviation $\sqrt{tol}/2$ elsewhere);
    * reverse-time queries ($t_{next} < t_{cur}$) return $W(t_{next}) - W(t_{cur})$.

    With `levy_area=True` the tree carries $Z(t) = \int_{t_0}^t W_s\,ds$ jointly with $W$
    (bisection of the pair by Gaussian conditioning), which gives the space-time Lévy
    area $\Delta Z = \int_{t_a}^{t_b} (W_s - W_{t_a})\,ds$ needed by `SRA1` (Foster, Lyons &
    Oberhauser 2020). Values are computed in float64 on the state's device and cast.

    Arguments:
        t0, t1: the span, `t0 < t1` (either integration direction may use it).
        seed: an int, or one seed per sample (batch-size invariance).
        levy_area: also carry the space-time Lévy area.
        tol: the shortest interval bisected; default `(t1 - t0) * 2**-20`.

    Cost: each query at a non-node time descends about `log2(step / tol)` levels, one
    normal draw each; power-of-two uniform grids on `[t0, t1]` are cheapest.
    """

    def __init__(self, t0: float, t1: float, seed: int | Sequence[int] | Tensor = 0, *,
                 levy_area: bool = False, tol: float | None = None):
        t0 = as_real("t0", t0)
        t1 = as_real("t1", t1)
        if not t1 > t0:
            raise ValueError(f"t1: expected t1 > t0 = {t0} (the tree spans [t0, t1]; integrate in either "
                             f"direction inside it), got t1={t1}")
        self.t0, self.t1 = t0, t1
        self.seed = _check_seed("seed", seed)
        self.levy_area = bool(levy_area)
        self.tol = (t1 - t0) * 2.0 ** -20 if tol is None else as_real("tol", tol, positive=True)
        self._evaluators: OrderedDict = OrderedDict()

    @property
    def supports_levy_area(self) -> bool:  # type: ignore[override]
        return self.levy_area

    def _evaluator(self, shape: tuple, device: torch.device) -> _TreeEvaluator:
        key = (tuple(shape), str(device))
        ev = self._evaluators.get(key)
        if ev is None:
            ev = _TreeEvaluator(self, tuple(shape), torch.device(device))
            self._evaluators[key] = ev
            if len(self._evaluators) > 4:
                self._evaluators.popitem(last=False)
        return ev

    def _snap(self, t: float, name: str) -> float:
        slack = 1e-6 * max(abs(self.t0), abs(self.t1), self.t1 - self.t0)
        if self.t0 <= t <= self.t1:
            return t
        if self.t0 - slack <= t < self.t0:
            return self.t0
        if self.t1 < t <= self.t1 + slack:
            return self.t1
        raise ValueError(f"{name}: the BrownianTree spans [{self.t0}, {self.t1}], got a query at t={t}")

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        if levy_area and not self.levy_area:
            raise ValueError("noise: the solver needs the space-time Lévy area, but this BrownianTree was built "
                             "with levy_area=False: construct BrownianTree(..., levy_area=True)")
        if span is not None:
            self._snap(span[0], "ts")
            self._snap(span[1], "ts")
        ev = self._evaluator(tuple(shape), device)
        snap = self._snap

        def increment(t_cur: float, t_next: float):
            out = ev.increment(snap(t_cur, "t"), snap(t_next, "t"), levy_area)
            if levy_area:
                return out[0].to(dtype), out[1].to(dtype)
            return out.to(dtype)
        return increment

    def snapshot(self, device):
        return 0  # a function of (seed, t) only: replays by construction

    def increment(self, ta: float, tb: float, like: Tensor, *, levy_area: bool = False):
        r"""$W(t_b) - W(t_a)$ shaped like `like` (and $\Delta Z$ with `levy_area=True`).

        Arguments:
            ta, tb: times in `[t0, t1]`, in either order.
            like: a tensor giving the shape `(B, ...)`, dtype and device.
            levy_area: also return $\int_{t_a}^{t_b} (W_s - W_{t_a})\,ds$.
        """
        if not isinstance(like, Tensor):
            raise TypeError(f"like: expected a tensor giving shape, dtype and device, got {describe(like)}")
        fn = self.bind(like.shape, like.dtype, like.device, levy_area=levy_area)
        return fn(as_real("ta", ta), as_real("tb", tb))

    def __call__(self, t: float, like: Tensor) -> Tensor:
        """$W(t)$ shaped like `like` ($W(t_0) = 0$)."""
        return self.increment(self.t0, t, like)

    def __repr__(self):
        s = self.seed if isinstance(self.seed, int) else f"<{self.seed.shape[0]} seeds>"
        return f"BrownianTree(t0={self.t0}, t1={self.t1}, seed={s}, levy_area={self.levy_area}, tol={self.tol:g})"


def as_noise(noise: Any) -> NoiseSource:
    """`noise` as a `NoiseSource`: None -> global generator, a `torch.Generator` -> `GeneratorNoise`."""
    if noise is None:
        return GeneratorNoise(None)
    if isinstance(noise, torch.Generator):
        return GeneratorNoise(noise)
    if isinstance(noise, NoiseSource):
        return noise
    raise TypeError(f"noise: expected None, a torch.Generator or a NoiseSource (GeneratorNoise, SeededNoise, "
                    f"BrownianTree), got {describe(noise)}")


# ----------------------------------------------------------------------------------------
# One generator per sample, and the sources a sampling call accepts
# ----------------------------------------------------------------------------------------


class PerSampleGenerators(NoiseSource):
    r"""One `torch.Generator` per sample: sample $b$ draws all its noise from generator $b$.

    A sample's noise then depends only on its own generator, never on the batch around it.
    Each draw loops over the batch (one small kernel per sample), so for large batches
    prefer a list of integer seeds (`SeededNoise`: a counter-based stream per sample, one
    kernel per draw).

    Arguments:
        generators: a sequence of `torch.Generator`, one per sample, on the state's device.
    """

    def __init__(self, generators: Sequence[torch.Generator]):
        generators = list(generators)
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError("generator: expected a non-empty sequence of torch.Generator, one per sample")
        self.generators = generators

    def _check(self, shape, device) -> None:
        if shape[0] != len(self.generators):
            raise ValueError(
                f"generator: got {len(self.generators)} per-sample generators for a batch of {shape[0]}:"
                " pass one generator per sample"
            )
        for g in self.generators:
            if torch.device(g.device).type != torch.device(device).type:
                raise ValueError(f"generator: a generator lives on {g.device} but the state is on {device}")

    def standard_normal(self, shape, dtype, device) -> Tensor:
        shape = tuple(shape)
        self._check(shape, device)
        return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype, device=device) for g in self.generators])

    def uniform(self, shape, dtype, device) -> Tensor:
        shape = tuple(shape)
        self._check(shape, device)
        return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype, device=device) for g in self.generators])

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        shape = tuple(shape)
        self._check(shape, device)

        def increment(t_cur: float, t_next: float) -> Tensor:
            return self.standard_normal(shape, dtype, device).mul_(math.sqrt(abs(t_next - t_cur)))

        def increment_levy(t_cur: float, t_next: float) -> tuple[Tensor, Tensor]:
            # dW = sqrt|h| xi_1, dZ = h (dW / 2 + sqrt(|h| / 12) xi_2) (Kloeden & Platen 1992, 10.4)
            h = t_next - t_cur
            xi = self.standard_normal((shape[0], 2, *shape[1:]), dtype, device)
            dw = xi[:, 0] * math.sqrt(abs(h))
            return dw, _levy_from_normals(dw, xi[:, 1], h)

        return increment_levy if levy_area else increment

    def __repr__(self) -> str:
        return f"PerSampleGenerators(<{len(self.generators)} generators>)"


def as_noise_source(generator: Any, batch: int) -> NoiseSource:
    r"""The noise source of a sampling call, from what the user passed as `generator`.

    * `None`: torch's global generator (`torch.manual_seed` controls it);
    * a `torch.Generator`: draws from it (reproducible for a given batch);
    * an `int` seed in $[0, 2^{64})$: one counter-based stream per sample, keyed by `(seed, b)`;
    * a sequence of `int` seeds (or an integer tensor), one per sample: sample $b$'s noise
      depends on its seed alone, so a sample is the same in any batch;
    * a sequence of `torch.Generator`, one per sample: the same invariance, drawn per sample;
    * a noise source (`GeneratorNoise`, `SeededNoise`, `PerSampleGenerators`; a `BrownianTree`
      gives increments only).

    Arguments:
        generator: one of the above.
        batch: the batch size $B$ (per-sample seeds and generators must number $B$).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return GeneratorNoise(generator)
    if isinstance(generator, NoiseSource):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return SeededNoise(check_seed("generator", generator))
    if isinstance(generator, Tensor) or (isinstance(generator, (list, tuple)) and generator):
        if not isinstance(generator, Tensor) and all(isinstance(g, torch.Generator) for g in generator):
            gens = PerSampleGenerators(generator)
            gens._check((batch,), gens.generators[0].device)
            return gens
        check_seed("generator", list(generator) if isinstance(generator, tuple) else generator)
        seeds = SeededNoise(list(generator) if isinstance(generator, tuple) else generator)
        if seeds.n_seeds is not None and seeds.n_seeds != batch:
            raise ValueError(
                f"generator: got {seeds.n_seeds} per-sample seeds for a batch of {batch}: pass one seed per sample"
            )
        return seeds
    raise TypeError(
        "generator: expected None, a torch.Generator, an int seed, a sequence of seeds or generators"
        f" (one per sample) or a solvers noise source, got {type(generator).__name__}"
    )
