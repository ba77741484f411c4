"""The revenue distribution's arithmetic, checked against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadml.forecast import distribution as dist


def brute_force(amounts: list[float], probs: list[float]) -> dict[float, float]:
    """Every won/lost combination with its probability."""
    out: dict[float, float] = {}
    for outcome in itertools.product((0, 1), repeat=len(amounts)):
        pr = math.prod(p if o else 1 - p for o, p in zip(outcome, probs, strict=True))
        total = sum(a for o, a in zip(outcome, amounts, strict=True) if o)
        out[total] = out.get(total, 0.0) + pr
    return out


def quantile_of(pmf: dict[float, float], q: float) -> float:
    acc = 0.0
    for value in sorted(pmf):
        acc += pmf[value]
        if acc >= q - 1e-12:
            return value
    return max(pmf)


@pytest.mark.parametrize("seed", range(6))
def test_integer_amounts_match_enumeration_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    amounts = rng.integers(1, 20, 7).astype(float).tolist()
    probs = rng.random(7).tolist()
    d = dist.open_deals(amounts, probs, step=1.0)
    exact = brute_force(amounts, probs)
    got = {float(x): float(p) for x, p in zip(d.support, d.pmf, strict=True) if p > 1e-15}
    assert set(got) == {k for k, v in exact.items() if v > 1e-15}
    for value, pr in exact.items():
        assert got.get(value, 0.0) == pytest.approx(pr, abs=1e-12)
    assert d.error_bound == 0.0
    for q in (0.1, 0.5, 0.9):
        assert d.quantile(q) == quantile_of(exact, q)
    assert d.prob_at_least(25.0) == pytest.approx(sum(p for v, p in exact.items() if v >= 25.0))


@pytest.mark.parametrize("seed", range(4))
def test_rounded_amounts_stay_within_the_stated_bound(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    amounts = (rng.lognormal(10, 1, 8)).tolist()
    probs = rng.random(8).tolist()
    d = dist.open_deals(amounts, probs, max_cells=300)  # a coarse grid: the bound matters
    exact = brute_force(amounts, probs)
    assert d.error_bound <= len(amounts) * d.step / 2 + 1e-9
    for q in (0.1, 0.5, 0.9):
        assert abs(d.quantile(q) - quantile_of(exact, q)) <= d.error_bound + 1e-6
    assert d.mean == pytest.approx(float(np.dot(amounts, probs)), abs=d.error_bound + 1e-6)


def test_all_certain_inputs_give_a_point_mass() -> None:
    amounts, probs = [100.0, 250.0, 40.0, 900.0], [1.0, 0.0, 1.0, 0.0]
    for shock in (0.0, 0.8):
        d = dist.revenue_distribution(
            won=1_000.0, amounts=amounts, probs=probs, shock_sd=shock, max_cells=512
        )
        q = d.quantile([0.01, 0.1, 0.5, 0.9, 0.99])
        assert np.allclose(q, 1_140.0, atol=d.error_bound + 1e-9)
        assert d.prob_at_least(1_140.0 - d.step) == pytest.approx(1.0)
        assert d.std == pytest.approx(0.0, abs=1e-9)


def test_shared_shock_keeps_every_deals_probability_and_widens_the_spread() -> None:
    rng = np.random.default_rng(5)
    amounts, probs = rng.integers(1, 30, 40).astype(float), rng.random(40)
    plain = dist.open_deals(amounts, probs, step=1.0)
    shocked = dist.open_deals(amounts, probs, step=1.0, shock_sd=1.0)
    q, w = dist.shocked_probabilities(probs, 1.0)
    assert np.allclose(w @ q, probs, atol=1e-9)
    assert shocked.mean == pytest.approx(plain.mean, rel=1e-9)
    assert shocked.std > 1.3 * plain.std


def test_compound_poisson_matches_direct_summation() -> None:
    rate, amounts = 1.7, np.array([2.0, 3.0, 3.0, 7.0])
    d = dist.compound_poisson(rate, amounts, step=1.0)
    severity = np.bincount(amounts.astype(int)) / len(amounts)
    expected = np.zeros(len(d.pmf))
    conv = np.array([1.0])
    for n in range(40):
        pn = math.exp(-rate) * rate**n / math.factorial(n)
        m = min(len(conv), len(expected))
        expected[:m] += pn * conv[:m]
        conv = np.convolve(conv, severity)
    assert np.allclose(d.pmf, expected, atol=1e-10)
    assert d.mean == pytest.approx(rate * amounts.mean(), rel=1e-9)


def test_negative_binomial_new_deals_have_the_stated_variance() -> None:
    rate, disp, amounts = 4.0, 0.5, np.array([10.0])
    d = dist.compound_poisson(rate, amounts, step=1.0, dispersion=disp)
    assert d.mean == pytest.approx(40.0, rel=1e-6)
    assert d.std**2 == pytest.approx(100.0 * (rate + disp * rate**2), rel=1e-4)


def test_monte_carlo_cross_checks_the_exact_distribution() -> None:
    rng = np.random.default_rng(11)
    kw = dict(
        won=5e5,
        amounts=rng.lognormal(10, 0.8, 120),
        probs=rng.random(120),
        shock_sd=0.6,
        new=[(3.0, rng.lognormal(9.5, 0.5, 30), 0.3), (1.5, rng.lognormal(11, 0.5, 20), 0.0)],
    )
    exact = dist.revenue_distribution(**kw)
    draws = dist.monte_carlo(**kw, draws=40_000, seed=3)
    for q in (0.1, 0.5, 0.9):
        assert exact.quantile(q) == pytest.approx(np.quantile(draws, q), rel=0.02)
    assert np.array_equal(draws, dist.monte_carlo(**kw, draws=40_000, seed=3))  # fixed seed


def test_a_shared_level_factor_keeps_the_mean_and_couples_the_new_deals_parts() -> None:
    """Two new-deals parts whose rates share a lognormal level factor: the mean stays
    rate x amount, the variance gains s^2-ish of the squared mean on the sum (not on each
    part alone, as independent factors would), and Monte Carlo agrees on the quantiles."""
    parts = [(200.0, np.array([10.0]), 0.0), (100.0, np.array([30.0]), 0.0)]
    plain = dist.new_deals(parts, step=1.0)
    for s in (0.1, 0.3):
        d = dist.new_deals(parts, step=1.0, level_sd=s)
        mean = 200 * 10 + 100 * 30
        assert d.mean == pytest.approx(mean, rel=1e-9)
        shared = mean**2 * (np.exp(s * s) - 1)  # Var(m) E[S]^2 with m lognormal, mean 1
        # Var = E[Var(S | m)] + Var(E[S | m]); the trapezoid grid's moments are not exact
        assert d.std**2 == pytest.approx(plain.std**2 * 1.0 + shared, rel=0.02)
        kw = dict(won=0.0, amounts=[], probs=[], new=parts, new_level_sd=s)
        exact = dist.revenue_distribution(**kw)
        draws = dist.monte_carlo(**kw, draws=40_000, seed=5)
        for q in (0.1, 0.5, 0.9):
            assert exact.quantile(q) == pytest.approx(np.quantile(draws, q), rel=0.01)
    assert dist.new_deals(parts, step=1.0, level_sd=0.0).pmf == pytest.approx(plain.pmf)
    # many deals on one amount: the coarse grid must not round the amount away
    assert dist.new_deals([(20_000, [1.0], 0.0)], step=1.0, level_sd=1.0).mean == pytest.approx(
        20_000, rel=1e-6
    )
    wide = [dist.new_deals(parts, step=1.0, level_sd=s) for s in (0.0, 0.1, 0.3)]
    spans = [d.quantile(0.9) - d.quantile(0.1) for d in wide]
    assert spans[0] < spans[1] < spans[2]


@pytest.mark.parametrize("cells", [1 << 19, 1 << 16])
def test_a_wide_level_factor_keeps_the_mean_of_spread_amounts(cells: int) -> None:
    """Three segments, about 230 new wins of lognormal amounts, the level sd at its cap:
    the grid, sized for the highest level, must still resolve a typical amount (sized
    from largest amount x largest count it rounded most amounts to 0 and lost 14-24% of
    the mean)."""
    rng = np.random.default_rng(3)
    parts = [
        (150.0, rng.lognormal(10, 0.8, 300), 0.05),
        (60.0, rng.lognormal(11, 0.8, 200), 0.1),
        (20.0, rng.lognormal(12, 0.8, 100), 0.1),
    ]
    mean = sum(r * x.mean() for r, x, _ in parts)
    kw = dict(won=0.0, amounts=[], probs=[], new=parts, new_level_sd=1.0)
    exact = dist.revenue_distribution(**kw, max_cells=cells)
    assert exact.mean == pytest.approx(mean, rel=0.01)
    draws = dist.monte_carlo(**kw, draws=40_000, seed=2)
    for q in (0.1, 0.5, 0.9):
        assert exact.quantile(q) == pytest.approx(np.quantile(draws, q), rel=0.03)


@settings(max_examples=40, deadline=None)
@given(
    amounts=st.lists(st.floats(1, 1e6), min_size=1, max_size=12),
    data=st.data(),
    shock=st.sampled_from([0.0, 0.7]),
)
def test_raising_a_deals_probability_never_lowers_any_quantile(
    amounts: list[float], data: st.DataObject, shock: float
) -> None:
    probs = data.draw(st.lists(st.floats(0, 1), min_size=len(amounts), max_size=len(amounts)))
    i = data.draw(st.integers(0, len(amounts) - 1))
    higher = list(probs)
    higher[i] = data.draw(st.floats(probs[i], 1))
    base = dist.revenue_distribution(
        won=0.0, amounts=amounts, probs=probs, shock_sd=shock, max_cells=2048
    )
    up = dist.revenue_distribution(
        won=0.0, amounts=amounts, probs=higher, shock_sd=shock, max_cells=2048
    )
    for q in (0.1, 0.5, 0.9):
        assert up.quantile(q) >= base.quantile(q) - 1e-9 * max(amounts)


def test_cutting_the_support_at_the_cap_changes_no_cell_below_it() -> None:
    rng = np.random.default_rng(9)
    amounts, probs = rng.integers(1, 50, 200).astype(float), rng.random(200) * 0.3
    cut = dist.open_deals(amounts, probs, step=1.0)
    full = dist._poisson_binomial(amounts.astype(np.int64), probs, int(amounts.sum()) + 1)
    assert len(cut.pmf) < len(full) / 2  # the cap really cuts
    assert np.allclose(cut.pmf[:-1], full[: len(cut.pmf) - 1], atol=1e-15)
    assert cut.tail_mass == pytest.approx(full[len(cut.pmf) - 1 :].sum(), abs=1e-15)
    assert cut.tail_mass < 1e-12


@pytest.mark.parametrize("disp", [1e-300, 5e-16, 1e-12, 1e-8])
def test_a_vanishing_dispersion_gives_the_poisson_pmf(disp: float) -> None:
    # Regression: a dispersion of 5e-16 (rounding in its estimate) once made the
    # negative-binomial pgf lose every digit, putting P50 at three times the mean.
    amounts = np.array([150.0, 40.0, 700.0, 90.0])
    poisson = dist.compound_poisson(0.4, amounts, step=1.0)
    nb = dist.compound_poisson(0.4, amounts, step=1.0, dispersion=disp)
    n = min(len(poisson.pmf), len(nb.pmf))
    assert np.abs(nb.pmf[:n] - poisson.pmf[:n]).max() < 1e-6
    assert nb.mean == pytest.approx(0.4 * amounts.mean(), rel=1e-6)


SMALL_DISPERSIONS = st.sampled_from([0.0, 1e-300, 1e-16, 5e-16, 1e-10, 1e-4, 0.3, 2.0])


@settings(max_examples=40, deadline=None)
@given(
    won=st.floats(0, 1e6),
    deals=st.lists(st.tuples(st.floats(1, 1e6), st.floats(0, 1)), min_size=1, max_size=30),
    new=st.lists(
        st.tuples(
            st.floats(0.01, 20),
            st.lists(st.floats(1, 1e6), min_size=1, max_size=8),
            SMALL_DISPERSIONS,
        ),
        max_size=3,
    ),
    shock=st.sampled_from([0.0, 0.7]),
)
def test_the_distribution_is_centred_on_the_expected_value(
    won: float,
    deals: list[tuple[float, float]],
    new: list[tuple[float, list[float], float]],
    shock: float,
) -> None:
    """For any inputs the pmf's mean is won + sum p a + sum rate * mean amount (within the
    grid error), and its median is within one sd of it (true of every distribution)."""
    amounts = np.array([a for a, _ in deals])
    probs = np.array([p for _, p in deals])
    d = dist.revenue_distribution(
        won=won, amounts=amounts, probs=probs, new=new, shock_sd=shock, max_cells=4096
    )
    expected = won + float(probs @ amounts) + sum(r * float(np.mean(x)) for r, x, _ in new)
    tol = d.error_bound + 1e-3 * (expected - won) + 1e-6 * won
    assert abs(d.mean - expected) <= tol
    assert abs(float(d.quantile(0.5)) - expected) <= d.std + tol + d.step


def test_p50_of_many_small_deals_sits_at_the_mean_inside_p10_p90() -> None:
    rng = np.random.default_rng(5)
    amounts = rng.lognormal(10, 0.5, 300)
    probs = rng.uniform(0.05, 0.6, 300)
    new = [(5.0, rng.lognormal(10, 0.5, 12), 1e-16), (2.0, rng.lognormal(9, 0.5, 12), 0.4)]
    d = dist.revenue_distribution(won=0.0, amounts=amounts, probs=probs, new=new, shock_sd=0.3)
    mean = float(probs @ amounts) + sum(r * float(np.mean(x)) for r, x, _ in new)
    p10, p50, p90 = d.quantile([0.1, 0.5, 0.9])
    assert p10 < mean < p90
    assert abs(p50 - mean) <= 0.1 * d.std  # a sum of many small deals is nearly symmetric


def test_product_tree_equals_deal_by_deal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many deals on a fine grid go through the FFT product tree; its pmf (and so every
    quantile) is the deal-by-deal one up to rounding, with the cap's tail folded alike."""
    rng = np.random.default_rng(11)
    units = rng.integers(1, 400, size=700)
    p = rng.uniform(0.0, 1.0, size=700)
    for size in (int(units.sum()) + 1, int(units.sum()) // 3):  # whole support, and capped
        direct = dist._poisson_binomial(units, p, size)
        monkeypatch.setattr(dist, "_DIRECT_MAX_WORK", 0)
        tree = dist.poisson_binomial(units, p, size)
        monkeypatch.undo()
        assert tree.shape == direct.shape
        assert np.abs(tree - direct).max() < 1e-12
        assert np.abs(np.cumsum(tree) - np.cumsum(direct)).max() < 1e-10
        if size < units.sum():  # most of the mass lies beyond a third of the total
            assert tree[-1] > 0.5


def test_a_target_just_above_the_certain_part_is_not_reached_for_sure() -> None:
    # One huge deal makes the grid step far larger than target - won: the certain part
    # alone (52,000) is below the target (90,000), so P(reach) is the deal's own 0.073.
    d = dist.open_deals(np.array([1e11]), np.array([0.073]), max_cells=1 << 14).shift(52_000.0)
    assert d.step > 90_000.0 - 52_000.0
    assert d.prob_at_least(90_000.0) == pytest.approx(0.073)
    assert d.prob_at_least(52_000.0) == pytest.approx(1.0)
