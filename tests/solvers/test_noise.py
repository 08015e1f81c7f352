"""Noise sources: distribution, consistency, per-sample seeds, Lévy area."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import solvers
from solvers.noise import _split_coefficients

F64 = torch.float64


def test_split_coefficients_reproduce_the_unit_interval_law():
    """Conditioning a split [0, r] | [r, 1] on the whole interval is consistent: mean map times the
    law of (W, Z) over [0, 1] plus the conditional covariance equals the law of (W, Z) over [0, r]."""
    for r in (0.5, 0.3, 0.9):
        m, l = _split_coefficients(r)
        s = torch.tensor([[1.0, 0.5], [0.5, 1 / 3]], dtype=F64)
        m, l = torch.tensor(m, dtype=F64), torch.tensor(l, dtype=F64)
        cov = m @ s @ m.T + l @ l.T
        expected = torch.tensor([[r, r * r / 2], [r * r / 2, r ** 3 / 3]], dtype=F64)
        torch.testing.assert_close(cov, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("source", ["seeded-one", "seeded-many"])
def test_counter_normals_are_standard_normal(source):
    """Counter-based normals pass a KS test (fixed seed; level 1e-3) and have no lag-1 correlation
    between successive draws of a sample beyond 4.5 standard errors."""
    n_steps, batch = 40, 2000
    src = solvers.SeededNoise(0) if source == "seeded-one" else solvers.SeededNoise(list(range(batch)))
    z = torch.stack([src.standard_normal((batch, 3), F64, "cpu") for _ in range(n_steps)])
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    lag = (z[1:] * z[:-1]).mean().item()
    assert abs(lag) < 4.5 / math.sqrt(z[1:].numel())
    u = src.uniform((batch, 25), torch.float32, "cpu")
    assert stats.kstest(u.double().flatten().numpy(), "uniform").pvalue > 1e-3
    assert 0 < u.min() and u.max() < 1


@pytest.mark.parametrize("levy_area", [False, True])
def test_brownian_tree_law(levy_area):
    """Increments over aligned and unaligned intervals, forward and reversed: Var dW = |h|,
    Var dZ = |h|^3/3, Cov(dW, dZ) = h|h|/2, disjoint increments uncorrelated (5000 paths,
    4.5 standard errors)."""
    n = 5000
    tree = solvers.BrownianTree(0.0, 2.0, seed=1, levy_area=levy_area)
    like = torch.zeros(n, 1, dtype=F64)
    se = math.sqrt(2 / n)
    for a, b in ((0.0, 1.0), (0.3, 0.7), (1.9, 0.45)):
        h = b - a
        out = tree.increment(a, b, like, levy_area=levy_area)
        dw = (out[0] if levy_area else out).flatten()
        assert abs(dw.var().item() / abs(h) - 1) < 4.5 * se
        if levy_area:
            dz = out[1].flatten()
            assert abs(dz.var().item() / (abs(h) ** 3 / 3) - 1) < 4.5 * se
            # Corr(dW, dZ) = sqrt(3)/2 exactly
            assert abs((dw * dz).mean().item() / (h * abs(h) / 2) - 1) < 4.5 * se
    w1 = tree.increment(0.0, 0.37, like).flatten()
    w2 = tree.increment(0.37, 1.61, like).flatten()
    assert abs(torch.corrcoef(torch.stack([w1, w2]))[0, 1].item()) < 4.5 / math.sqrt(n)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=3, max_size=6))
def test_brownian_tree_is_additive_and_order_independent(points):
    """For any query points: increments add up (W(a,c) = W(a,b) + W(b,c), also for Z with its
    concatenation rule), and a fresh tree queried in another order returns the same values."""
    like = torch.zeros(3, 2, dtype=F64)
    t1 = solvers.BrownianTree(0.0, 1.0, seed=7, levy_area=True)
    t2 = solvers.BrownianTree(0.0, 1.0, seed=7, levy_area=True)
    a, b, c = points[:3]
    w_ab, z_ab = t1.increment(a, b, like, levy_area=True)
    w_bc, z_bc = t1.increment(b, c, like, levy_area=True)
    w_ac, z_ac = t1.increment(a, c, like, levy_area=True)
    torch.testing.assert_close(w_ab + w_bc, w_ac, rtol=0, atol=1e-12)
    torch.testing.assert_close(z_ab + z_bc + (c - b) * w_ab, z_ac, rtol=0, atol=1e-12)
    for p in reversed(points):
        t2.increment(0.0, p, like)
    torch.testing.assert_close(t2.increment(a, c, like, levy_area=True)[0], w_ac, rtol=0, atol=1e-12)


def test_brownian_tree_exact_at_dyadic_times_and_float32_follows_float64():
    """At dyadic times the tree returns node values exactly, and float32 output is the float64 path rounded."""
    tree = solvers.BrownianTree(0.0, 1.0, seed=2)
    x64 = torch.zeros(4, 5, dtype=F64)
    coarse = tree.increment(0.25, 0.75, x64)
    fine = sum(tree.increment(0.25 + k / 64, 0.25 + (k + 1) / 64, x64) for k in range(32))
    torch.testing.assert_close(fine, coarse, rtol=0, atol=1e-13)
    w32 = tree.increment(0.25, 0.75, x64.float())
    assert w32.dtype == torch.float32
    torch.testing.assert_close(w32, coarse.float())


def test_brownian_tree_reverse_queries_negate():
    tree = solvers.BrownianTree(-1.0, 1.0, seed=3)
    like = torch.zeros(2, 3)
    torch.testing.assert_close(tree.increment(0.6, -0.2, like), -tree.increment(-0.2, 0.6, like))
    assert torch.equal(tree(-1.0, like), torch.zeros_like(like))


def test_seeded_noise_per_sample_streams():
    """A sample's stream depends on its seed and the draw count only, not on the batch."""
    a = solvers.SeededNoise([5, 6, 7])
    b = solvers.SeededNoise([7, 5])
    za = [a.standard_normal((3, 4), torch.float32, "cpu") for _ in range(3)]
    zb = [b.standard_normal((2, 4), torch.float32, "cpu") for _ in range(3)]
    for x, y in zip(za, zb):
        assert torch.equal(x[2], y[0]) and torch.equal(x[0], y[1])
    assert not torch.equal(za[0], za[1])


def test_generator_noise_reproducible():
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    f1 = solvers.GeneratorNoise(g1).bind((3, 2), torch.float32, torch.device("cpu"))
    f2 = solvers.GeneratorNoise(g2).bind((3, 2), torch.float32, torch.device("cpu"))
    assert torch.equal(f1(0.0, 0.1), f2(0.0, 0.1))
    levy = solvers.GeneratorNoise(torch.Generator().manual_seed(0)).bind((20000,), F64, torch.device("cpu"),
                                                                          levy_area=True)
    dw, dz = levy(0.5, 0.3)
    h = -0.2
    assert abs(dw.var().item() / 0.2 - 1) < 0.05
    assert abs(dz.var().item() / (0.2 ** 3 / 3) - 1) < 0.05
    assert abs((dw * dz).mean().item() / (h * abs(h) / 2) - 1) < 0.05


# ---------------------------------------------------------------------- 64-bit keyed streams
def test_int64_mixing_matches_the_reference_on_the_host():
    """The tensor finaliser (int64 arithmetic wrapping modulo 2**64, masked right shifts) equals
    SplitMix64's finaliser on Python ints, bit for bit, on random words including the sign bit."""
    from solvers.noise import _hash64, _mix64_, _signed

    rng = __import__("random").Random(0)
    words = [rng.getrandbits(64) for _ in range(4000)] + [0, 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
    out = _mix64_(torch.tensor([_signed(w) for w in words], dtype=torch.int64)).tolist()
    assert [o & (2 ** 64 - 1) for o in out] == [_hash64(w) for w in words]


def test_no_repeated_streams_in_200_seeds_of_65536_samples():
    """Each (seed, sample) gets its own 64-bit key: none repeats among 200 int seeds x 65,536
    samples (the old 32-bit affine keys repeated 46,798 times here), and the pair the old keys
    made equal (seed 3 sample 581, seed 143 sample 19319) now differs. The first draw of each
    stream is a bijective function of its key, so distinct keys give distinct streams."""
    from solvers.noise import _sample_keys

    keys = torch.cat([_sample_keys(s, 65536, torch.device("cpu"), "test") for s in range(200)])
    assert torch.unique(keys).numel() == 200 * 65536
    a = solvers.SeededNoise(3).standard_normal((600, 2), F64, "cpu")[581]
    b = solvers.SeededNoise(143).standard_normal((19320, 2), F64, "cpu")[19319]
    assert not torch.equal(a, b)
    # per-sample seed lists: keys depend on the seed alone, and seeds 0..2**20 never collide
    seeds = torch.arange(2 ** 20)
    assert torch.unique(_sample_keys(seeds, seeds.numel(), torch.device("cpu"), "test")).numel() == 2 ** 20


@pytest.mark.parametrize("form", ["int-seed", "seed-list", "sample-index"])
def test_neighbouring_seeds_are_uncorrelated(form):
    """Streams of neighbouring seeds (s, s + 1), or of neighbouring samples b, b + 1 of one seed,
    are independent: over 200 pairs of 4096 normals each, the sample correlations r_k satisfy
    sum_k n r_k^2 ~ chi-square(200) under independence (level 1e-3), and each |r_k| < 4.5 / sqrt(n)."""
    n, pairs = 4096, 200
    stats_ = []
    for s in range(pairs):
        if form == "int-seed":
            a = solvers.SeededNoise(s).standard_normal((1, n), F64, "cpu")[0]
            b = solvers.SeededNoise(s + 1).standard_normal((1, n), F64, "cpu")[0]
        elif form == "seed-list":
            z = solvers.SeededNoise([1000 + s, 1001 + s]).standard_normal((2, n), F64, "cpu")
            a, b = z[0], z[1]
        else:
            z = solvers.SeededNoise(s).standard_normal((2, n), F64, "cpu")
            a, b = z[0], z[1]
        r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert abs(r) < 4.5 / math.sqrt(n)
        stats_.append(n * r * r)
    assert stats.chi2.sf(sum(stats_), pairs) > 1e-3


def test_float32_draws_are_the_float64_draws_rounded():
    """The same seed gives the same numbers in float32 and float64, up to float32 rounding (the
    float32 uniforms are the float64 ones' top 24 bits)."""
    z64 = solvers.SeededNoise(9).standard_normal((64, 5), F64, "cpu")
    z32 = solvers.SeededNoise(9).standard_normal((64, 5), torch.float32, "cpu")
    # uniforms quantised to 2**-24 and float32 log/cos: errors of a few 1e-6 times |dz/du| ~ |z|
    torch.testing.assert_close(z32.double(), z64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [-1, 2 ** 64, [0, -3], [2 ** 64], torch.tensor([1, -2])])
def test_seeds_outside_64_bits_are_refused(seed):
    """Seeds are 64-bit unsigned: nothing outside [0, 2**64) is reduced modulo 2**64 (which made
    generator=2**64 the same as generator=0)."""
    with pytest.raises(ValueError, match=r"seed: expected (a seed|seeds) in \[0, 2\*\*64\)"):
        solvers.SeededNoise(seed)
    with pytest.raises(ValueError, match=r"generator: expected (a seed|seeds) in \[0, 2\*\*64\)"):
        solvers.as_noise_source(seed, 1 if isinstance(seed, int) else len(seed))


def test_full_range_seeds_are_distinct():
    """The top of the range is usable and distinct from the bottom: 2**64 - 1 is not 0, 2**63 is not 0."""
    z = [solvers.SeededNoise(s).standard_normal((2, 3), F64, "cpu") for s in (0, 2 ** 63, 2 ** 64 - 1)]
    assert not torch.equal(z[0], z[1]) and not torch.equal(z[0], z[2]) and not torch.equal(z[1], z[2])
    w = solvers.SeededNoise([0, 2 ** 63, 2 ** 64 - 1]).standard_normal((3, 3), F64, "cpu")
    assert len({tuple(r.tolist()) for r in w}) == 3


def test_noise_sources_live_in_solvers_and_stay_importable_from_scoresde():
    import scoresde.samplers as samplers

    assert samplers.PerSampleGenerators is solvers.PerSampleGenerators
    assert samplers.as_noise_source is solvers.as_noise_source
    g = [torch.Generator().manual_seed(k) for k in range(3)]
    src = solvers.as_noise_source(g, 3)
    assert isinstance(src, solvers.PerSampleGenerators)
    assert src.uniform((3, 2), F64, "cpu").shape == (3, 2)
