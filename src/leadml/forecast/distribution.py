"""The distribution of revenue booked in a period.

Revenue = a certain part (deals already won) + the sum over open deals of
``Bernoulli(p_i) * amount_i`` (independent) + the revenue of deals not yet created
(a compound Poisson: ``N ~ Poisson(rate)`` new won deals, amounts drawn from an
empirical amount distribution).

Exact arithmetic on a grid: every amount is rounded to the nearest multiple of a
grid step ``step``, and the probability mass function of the sum is computed by
dynamic programming (open deals) and FFT (compound Poisson, convolution). Rounding
moves each deal's amount by at most ``step / 2``, so every realised total of the
open deals is off by at most ``n_deals * step / 2``; that bound
(:attr:`RevenueDistribution.error_bound`) also bounds the error of every quantile.
For the new-deals part the bound holds in expectation (``rate * step / 2``).
:func:`monte_carlo` draws the same model with a fixed seed as a cross-check.

Two optional extensions make the spread honest when deals are not independent:

- ``shock_sd`` (tau): the open deals of a period share a random effect on the
  logit scale, ``p_i(e) = sigmoid(l_i + e)`` with ``e ~ N(0, tau^2)`` and ``l_i``
  chosen so that ``E_e[p_i(e)] = p_i`` (each deal's calibrated probability is kept
  exactly). The pmf is the Gauss-Hermite mixture over e of exact Poisson-binomial
  pmfs; every component rises with every p_i, so the mixture's quantiles do too.
- ``dispersion`` (d) on new deals: the count is negative binomial with mean
  ``rate`` and variance ``rate + d * rate^2`` (a gamma-mixed Poisson; d = 0 is Poisson).
- ``level_sd`` (s) on new deals: the rates of all new-deals parts share one level
  factor ``m = exp(e - s^2 / 2)``, ``e ~ N(0, s^2)`` (mean 1: the expected revenue is
  kept), for a rate of deal creation that may drift before the period (a period far
  ahead). The pmf is the mixture over e on a fine grid (see :func:`level_nodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_CELLS = 1 << 19
# A new-deals part: (expected count, amount sample, negative-binomial dispersion).
NewPart = tuple[float, "Sequence[float] | np.ndarray", float]
_TAIL = 1e-12  # probability mass allowed to be cut from a compound-Poisson tail
# Grid cells of the new deals' level mixture (see new_deals): the budget, the most, and
# the cells a part's median amount should span at least.
_LEVEL_CELLS = 1 << 17
_MAX_LEVEL_CELLS = 1 << 20
_CELLS_PER_AMOUNT = 20


@dataclass(frozen=True)
class RevenueDistribution:
    """Revenue ``offset + k * step`` has probability ``pmf[k]``.

    ``error_bound`` is the largest amount by which grid rounding can move any
    realised total (and therefore any quantile) away from the exact model.
    """

    step: float
    pmf: np.ndarray
    offset: float = 0.0
    error_bound: float = 0.0
    tail_mass: float = 0.0  # mass in the last cell that stands for "at or beyond it"

    @property
    def support(self) -> np.ndarray:
        return self.offset + self.step * np.arange(len(self.pmf))

    @property
    def mean(self) -> float:
        return float(self.offset + self.step * np.dot(np.arange(len(self.pmf)), self.pmf))

    @property
    def std(self) -> float:
        k = np.arange(len(self.pmf))
        m = np.dot(k, self.pmf)
        return float(self.step * np.sqrt(max(np.dot(k * k, self.pmf) - m * m, 0.0)))

    def cdf(self) -> np.ndarray:
        return np.cumsum(self.pmf)

    def quantile(self, q: float | Sequence[float]) -> float | np.ndarray:
        """Smallest revenue x with P(revenue <= x) >= q."""
        qs = np.atleast_1d(np.asarray(q, dtype=float))
        cdf = self.cdf()
        # Tolerance: the pmf sums to 1 only up to floating-point rounding.
        idx = np.searchsorted(cdf, qs - 1e-12, side="left")
        idx = np.minimum(idx, len(self.pmf) - 1)
        out = self.offset + self.step * idx
        return float(out[0]) if np.ndim(q) == 0 else out

    def prob_at_least(self, x: float) -> float:
        """P(revenue >= x)."""
        if x <= self.offset:
            return 1.0
        # Grid points at or above x (with a hair of tolerance for float grids); the
        # first point, the offset itself, is below x here whatever the step.
        k = max(int(np.ceil((x - self.offset) / self.step - 1e-9)), 1)
        if k >= len(self.pmf):
            return 0.0
        return float(np.clip(self.pmf[k:].sum(), 0.0, 1.0))

    def shift(self, amount: float) -> RevenueDistribution:
        """Add a certain amount (revenue already won)."""
        return RevenueDistribution(
            self.step, self.pmf, self.offset + amount, self.error_bound, self.tail_mass
        )


def point_mass(value: float, step: float = 1.0) -> RevenueDistribution:
    """A certain revenue."""
    return RevenueDistribution(step, np.ones(1), float(value), 0.0)


def grid_step(total_scale: float, max_cells: int = DEFAULT_MAX_CELLS) -> float:
    """A grid step that keeps a support of ``total_scale`` within ``max_cells`` cells."""
    if total_scale <= 0 or not np.isfinite(total_scale):
        return 1.0
    return float(total_scale) / max(max_cells - 1, 1)


def _validate(amounts: np.ndarray, probs: np.ndarray) -> None:
    if amounts.shape != probs.shape:
        raise ValueError(
            f"amounts ({amounts.shape}) and probabilities ({probs.shape}) differ in length"
        )
    if np.any(~np.isfinite(amounts)) or np.any(amounts < 0):
        raise ValueError("amounts must be finite and non-negative")
    if np.any(~np.isfinite(probs)) or np.any((probs < 0) | (probs > 1)):
        raise ValueError("probabilities must lie in [0, 1]")


SHOCK_NODES = 7


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def shock_nodes(shock_sd: float, nodes: int = SHOCK_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite points e_j and weights w_j (summing to 1) for e ~ N(0, shock_sd^2)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return shock_sd * z, w / w.sum()


def shocked_probabilities(
    probs: np.ndarray, shock_sd: float, nodes: int = SHOCK_NODES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-node probabilities ``sigmoid(l_i + e_j)`` (rows = nodes) whose weighted mean over
    the nodes is exactly ``probs``, and the node weights."""
    p = np.asarray(probs, dtype=float)
    e, w = shock_nodes(shock_sd, nodes)
    lo = np.full(p.shape, -40.0)
    hi = np.full(p.shape, 40.0)
    for _ in range(60):  # bisection on l: E_e[sigmoid(l + e)] is increasing in l
        mid = 0.5 * (lo + hi)
        mean = w @ _sigmoid(mid[None, :] + e[:, None])
        lo = np.where(mean < p, mid, lo)
        hi = np.where(mean < p, hi, mid)
    ell = 0.5 * (lo + hi)
    q = _sigmoid(ell[None, :] + e[:, None])
    q = np.where(p[None, :] <= 0, 0.0, np.where(p[None, :] >= 1, 1.0, q))
    # Remove the bisection's last rounding so that marginals match to machine precision.
    q = np.clip(
        q * np.where(w @ q > 0, p / np.where(w @ q > 0, w @ q, 1.0), 0.0)[None, :], 0.0, 1.0
    )
    return q, w


def open_deals(
    amounts: Sequence[float] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    *,
    step: float | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    shock_sd: float = 0.0,
) -> RevenueDistribution:
    """Exact distribution of ``sum_i Bernoulli(p_i) * amount_i`` on a grid.

    Dynamic programming: start from a point mass at 0 and, deal by deal, mix the
    current pmf with itself shifted by the deal's amount. ``step`` defaults to the
    total amount / ``max_cells`` (it depends on the amounts only, so changing a
    probability never moves the grid). The pmf is computed only up to a cap
    ``U = max over shock nodes of (sum a q + 8 sqrt(sum a^2 q)) + max a`` (rising
    with every p_i); the last cell holds the mass at or beyond U (``tail_mass``,
    below 1e-12 in practice), so every quantile below it is exact and the cost is
    O(n * U / step). With ``shock_sd > 0`` the deals share a logit-scale random
    effect (module docstring): the result is the mixture over Gauss-Hermite nodes,
    each deal keeping its marginal p_i.
    """
    a = np.asarray(amounts, dtype=float)
    p = np.asarray(probs, dtype=float)
    _validate(a, p)
    if step is None:  # from every amount, so that a probability moving off 0 keeps the grid
        step = grid_step(float(a.sum()), max_cells)
    keep = (p > 0) & (a > 0)
    a, p = a[keep], p[keep]
    units = np.rint(a / step).astype(np.int64)
    error = float(np.abs(units * step - a).sum())
    if shock_sd > 0 and np.any((p > 0) & (p < 1)):
        q, w = shocked_probabilities(p, shock_sd)
    else:
        q, w = p[None, :], np.ones(1)
    cap = max(float(a @ qj + 8.0 * np.sqrt((a * a) @ qj)) for qj in q) + float(a.max(initial=0.0))
    size = int(min(units.sum(), np.ceil(cap / step))) + 1
    pmf = sum(wj * poisson_binomial(units, qj, size) for qj, wj in zip(q, w, strict=True))
    pmf = np.asarray(pmf, dtype=float)
    tail = float(pmf[-1]) if size <= units.sum() else 0.0
    return RevenueDistribution(float(step), pmf, 0.0, error, tail)


# Above this many cell updates (deals x cells, ~0.5 s) the pmf is built by a product tree
# of FFT convolutions instead of deal by deal: 21k open deals (a 1M-lead company) with a
# 7-node shock took 133 s deal by deal, 5 s by the tree.
_DIRECT_MAX_WORK = 200_000_000
_LEAF_DEALS = 64


def poisson_binomial(units: np.ndarray, p: np.ndarray, size: int) -> np.ndarray:
    """pmf over grid cells 0..size-1 of sum_i Bernoulli(p_i) * units_i, the last cell
    holding all the mass at or beyond it: deal by deal when that is cheap, else leaves of
    ``_LEAF_DEALS`` deals deal by deal, multiplied pairwise by FFT convolution (the same
    pmf up to floating-point rounding, ~1e-15 per cell)."""
    if len(units) * size <= _DIRECT_MAX_WORK:
        return _poisson_binomial(units, p, size)
    from scipy.signal import fftconvolve

    parts = []
    for i in range(0, len(units), _LEAF_DEALS):
        u, q = units[i : i + _LEAF_DEALS], p[i : i + _LEAF_DEALS]
        parts.append(_poisson_binomial(u, q, int(min(u.sum(), size - 1)) + 1))
    while len(parts) > 1:
        pairs = [
            _fold(fftconvolve(a, b), size) for a, b in zip(parts[::2], parts[1::2], strict=False)
        ]
        parts = pairs + parts[len(pairs) * 2 :]
    out = np.zeros(size)
    out[: len(parts[0])] = parts[0]
    return out


def _fold(pmf: np.ndarray, size: int) -> np.ndarray:
    """Clip FFT round-off below 0 and put the mass at or beyond cell size - 1 there."""
    pmf = np.clip(pmf, 0.0, None)
    if len(pmf) > size:
        pmf = np.concatenate([pmf[: size - 1], [pmf[size - 1 :].sum()]])
    return pmf


def _poisson_binomial(units: np.ndarray, p: np.ndarray, size: int) -> np.ndarray:
    """pmf over grid cells 0..size-1 of sum_i Bernoulli(p_i) * units_i; when the sum can
    exceed size - 1 cells, the last cell holds all the mass at or beyond it."""
    pmf = np.zeros(size)
    pmf[0] = 1.0
    last = size - 1
    top = 0  # highest reachable cell so far: only pmf[: top + 1] is non-zero
    for k, q in zip(units, p, strict=True):
        if k == 0:
            continue
        moved = q * pmf[: top + 1]
        pmf[: top + 1] *= 1.0 - q
        stay = max(min(top + 1, last - k), 0)  # cells i with i + k < last
        pmf[k : k + stay] += moved[:stay]
        pmf[last] += moved[stay:].sum()
        top = min(top + k, last)
    return pmf


def compound_poisson(
    rate: float,
    amounts: Sequence[float] | np.ndarray,
    *,
    step: float,
    weights: Sequence[float] | np.ndarray | None = None,
    dispersion: float = 0.0,
) -> RevenueDistribution:
    """Distribution of ``sum_{j<=N} X_j`` with ``N ~ Poisson(rate)`` (negative binomial with
    variance ``rate + dispersion * rate^2`` when ``dispersion > 0``) and ``X_j`` drawn from
    the empirical distribution ``amounts`` (optionally weighted), computed by FFT.

    The support is cut where the remaining tail mass is below 1e-12 (that mass is
    put on the last cell). ``error_bound`` is ``rate * step / 2`` (in expectation).
    """
    if rate < 0 or not np.isfinite(rate):
        raise ValueError("the rate of new deals must be a finite non-negative number")
    x = np.asarray(amounts, dtype=float)
    if rate == 0 or len(x) == 0 or float(x.max(initial=0.0)) <= 0:
        return point_mass(0.0, step)
    return _compound([(rate, x, dispersion)], step, np.ones(1), np.ones(1), weights)


def new_deals(
    parts: Sequence[NewPart], *, step: float, level_sd: float = 0.0
) -> RevenueDistribution:
    """The revenue of new-deals parts ``(rate, amounts, dispersion)``, independent given
    the level factor of ``level_sd`` that their rates share (see the module docstring).

    With a level factor, the mixture is computed on a grid that is a multiple of ``step``
    (every level node one product of generating functions in the Fourier domain) and
    returned on ``step``; ``error_bound`` counts that grid. Its cells: about
    ``_LEVEL_CELLS`` over the reach of the highest level (:func:`_reach`), more (up to
    ``_MAX_LEVEL_CELLS``) when that would round a part's median amount by more than
    1 / (2 * ``_CELLS_PER_AMOUNT``) of it."""
    for rate, _, _ in parts:
        if rate < 0 or not np.isfinite(rate):
            raise ValueError("the rate of new deals must be a finite non-negative number")
    live = [
        (r, np.asarray(x, dtype=float), d)
        for r, x, d in parts
        if r > 0 and len(x) and float(np.max(x, initial=0.0)) > 0
    ]
    if not live:
        return point_mass(0.0, step)
    if level_sd <= 0:
        return convolve(*[compound_poisson(r, x, step=step, dispersion=d) for r, x, d in live])
    levels, weights = level_nodes(level_sd, _relative_sd(live))
    reach = _reach(live, float(levels.max()))
    cells = reach / step
    fine_enough = min(float(np.median(x)) for _, x, _ in live) / (_CELLS_PER_AMOUNT * step)
    k = min(int(np.ceil(cells / _LEVEL_CELLS)), max(int(fine_enough), 1))
    k = max(k, int(np.ceil(cells / _MAX_LEVEL_CELLS)), 1)
    coarse = _compound(live, k * step, levels, weights, None, reach=reach)
    pmf = np.zeros(k * (len(coarse.pmf) - 1) + 1)
    pmf[::k] = coarse.pmf
    return RevenueDistribution(float(step), pmf, 0.0, coarse.error_bound)


def _compound(
    parts: Sequence[tuple[float, np.ndarray, float]],
    step: float,
    levels: np.ndarray,
    level_weights: np.ndarray,
    weights: Sequence[float] | np.ndarray | None,
    reach: float | None = None,
) -> RevenueDistribution:
    """The FFT behind :func:`compound_poisson` and :func:`new_deals`: the parts' generating
    functions are multiplied at each level factor and mixed with ``level_weights`` in the
    Fourier domain, then one inverse transform. The support: up to ``reach`` when given,
    else every part's largest amount times a count it hardly exceeds."""
    top = float(levels.max())
    units, severities = [], []
    for _, x, _ in parts:
        w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
        u = np.rint(x / step).astype(np.int64)
        mass = np.bincount(u, weights=w)
        units.append((u, w))
        severities.append(mass / mass.sum())
    size = 1 + (
        int(np.ceil(reach / step))
        if reach is not None
        else sum(
            (len(sev) - 1) * _max_count(r * top, d)
            for sev, (r, _, d) in zip(severities, parts, strict=True)
        )
    )
    n_fft = 1 << int(np.ceil(np.log2(max(size, 2))))
    phis = [np.fft.rfft(sev, n_fft) for sev in severities]
    gen = np.zeros(n_fft // 2 + 1, dtype=complex)
    for m, wm in zip(levels, level_weights, strict=True):
        g = np.ones_like(gen)
        for (r, _, d), phi in zip(parts, phis, strict=True):
            g *= _generating(r * m, d, phi)
        gen += wm * g
    pmf = np.fft.irfft(gen, n_fft)[:size]
    pmf = np.clip(pmf, 0.0, None)
    pmf /= pmf.sum()
    cdf = np.cumsum(pmf)
    last = int(np.searchsorted(cdf, 1.0 - _TAIL)) + 1
    pmf = pmf[: min(last, size)].copy()
    pmf[-1] += max(1.0 - pmf.sum(), 0.0)
    error = sum(
        float(r * np.average(np.abs(u * step - x), weights=w))
        for (r, x, _), (u, w) in zip(parts, units, strict=True)
    )
    return RevenueDistribution(float(step), pmf, 0.0, error)


def _generating(rate: float, dispersion: float, phi: np.ndarray) -> np.ndarray:
    """The count's probability generating function at the severity's transform ``phi``."""
    if dispersion > 0:
        # pgf of the negative binomial: (1 - d * rate * (z - 1)) ** (-1 / d), evaluated as
        # exp(-log1p(-d * rate * (z - 1)) / d) with an accurate complex log1p: the plain
        # power loses every digit when d is tiny (d = 5e-16 from rounding in the
        # dispersion estimate once put P50 at three times the mean). The base has a
        # positive real part on the unit circle, so the principal log is continuous.
        return np.exp(-_log1p_complex(-dispersion * rate * (phi - 1.0)) / dispersion)
    return np.exp(rate * (phi - 1.0))


def _reach(parts: Sequence[tuple[float, np.ndarray, float]], level: float) -> float:
    """A revenue the parts' sum at ``level`` hardly exceeds: its mean + 12 sd + 30 of the
    largest amounts (Bernstein's inequality puts the mass beyond below e^-40). Much
    tighter than largest amount x largest count, which for many deals of spread amounts
    stretches a grid so far that the typical amount rounds to nothing."""
    mean = sum(r * level * float(x.mean()) for r, x, _ in parts)
    var = sum(
        r * level * float((x * x).mean()) + d * (r * level * float(x.mean())) ** 2
        for r, x, d in parts
    )
    return mean + 12.0 * float(np.sqrt(var)) + 30.0 * max(float(x.max()) for _, x, _ in parts)


def _relative_sd(parts: Sequence[tuple[float, np.ndarray, float]]) -> float:
    """The coefficient of variation of the parts' summed revenue at level 1."""
    mean = sum(r * float(x.mean()) for r, x, _ in parts)
    var = sum(r * float((x * x).mean()) + d * (r * float(x.mean())) ** 2 for r, x, d in parts)
    return float(np.sqrt(var) / mean) if mean > 0 else 1.0


def level_nodes(level_sd: float, relative_sd: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Level factors ``exp(e_j - s^2 / 2)`` and weights for e ~ N(0, s^2): the trapezoid
    rule on ``[-4 s, 4 s]`` (the mass beyond, 6e-5, is left out), its spacing at most s
    and ``relative_sd``, the spread of the sum at one level (coarser spacing would leave
    lumps in the mixture's pmf; for a smooth integrand of width sigma the rule's error is
    about exp(-2 pi^2 sigma^2 / spacing^2)), with at most 201 nodes; the factors are scaled
    so that their weighted mean is exactly 1. ``[1], [1]`` when ``level_sd`` is 0."""
    if level_sd <= 0:
        return np.ones(1), np.ones(1)
    spacing = min(relative_sd, level_sd)
    n = min(int(np.ceil(8 * level_sd / spacing)) + 1, 201)
    e = np.linspace(-4 * level_sd, 4 * level_sd, n)
    w = np.exp(-0.5 * (e / level_sd) ** 2)
    w /= w.sum()
    m = np.exp(e - level_sd**2 / 2)
    return m / float(w @ m), w


def _log1p_complex(z: np.ndarray) -> np.ndarray:
    """log(1 + z) for complex z with Re(1 + z) > 0, accurate to rounding also for tiny |z|:
    log|1 + z| = log1p(2x + x^2 + y^2) / 2 and arg(1 + z) = atan2(y, 1 + x)."""
    x, y = z.real, z.imag
    return 0.5 * np.log1p(2.0 * x + x * x + y * y) + 1j * np.arctan2(y, 1.0 + x)


def _max_count(rate: float, dispersion: float) -> int:
    """A count of new deals beyond which the upper tail is negligible (mean + 12 sd + 10)."""
    return int(np.ceil(rate + 12.0 * np.sqrt(rate + dispersion * rate * rate) + 10))


def convolve(*parts: RevenueDistribution) -> RevenueDistribution:
    """Distribution of the sum of independent parts on the same grid step."""
    if not parts:
        return point_mass(0.0)
    step = parts[0].step
    for part in parts[1:]:
        if not np.isclose(part.step, step, rtol=1e-9):
            raise ValueError("distributions on different grid steps cannot be convolved")
    pmf = parts[0].pmf
    for part in parts[1:]:
        size = len(pmf) + len(part.pmf) - 1
        if min(len(pmf), len(part.pmf)) < 64:
            pmf = np.convolve(pmf, part.pmf)
        else:
            n_fft = 1 << int(np.ceil(np.log2(size)))
            pmf = np.fft.irfft(np.fft.rfft(pmf, n_fft) * np.fft.rfft(part.pmf, n_fft), n_fft)[:size]
            pmf = np.clip(pmf, 0.0, None)
            pmf /= pmf.sum()
    return RevenueDistribution(
        step,
        pmf,
        float(sum(p.offset for p in parts)),
        float(sum(p.error_bound for p in parts)),
        float(sum(p.tail_mass for p in parts)),
    )


def revenue_distribution(
    *,
    won: float,
    amounts: Sequence[float] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    new: Sequence[NewPart] = (),
    max_cells: int = DEFAULT_MAX_CELLS,
    shock_sd: float = 0.0,
    new_level_sd: float = 0.0,
) -> RevenueDistribution:
    """Won (certain) + open deals (Poisson-binomial, optionally with a shared shock)
    + new deals: parts ``(rate, amounts, dispersion)`` (e.g. one per segment), each
    compound Poisson or negative binomial, independent given their shared level factor
    (``new_level_sd``, see :func:`new_deals`).

    The grid step is chosen so that the open pipeline plus a generous upper tail
    of the new deals (at their highest level factor, :func:`_reach`) fits in
    ``max_cells`` cells.
    """
    a = np.asarray(amounts, dtype=float)
    live = [(r, np.asarray(x, dtype=float), d) for r, x, d in new if r > 0 and len(x)]
    if new_level_sd > 0 and live:
        new_scale = _reach(live, float(level_nodes(new_level_sd)[0].max()))
    else:
        new_scale = sum(float(x.max()) * _max_count(r, d) for r, x, d in live)
    step = grid_step(float(a.sum()) + new_scale, max_cells)
    parts = [open_deals(a, probs, step=step, shock_sd=shock_sd)]
    if live:
        parts.append(new_deals(live, step=step, level_sd=new_level_sd))
    return convolve(*parts).shift(float(won))


def monte_carlo(
    *,
    won: float,
    amounts: Sequence[float] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    new: Sequence[NewPart] = (),
    shock_sd: float = 0.0,
    new_level_sd: float = 0.0,
    draws: int = 20_000,
    seed: int = 7,
    chunk: int = 2_000,
) -> np.ndarray:
    """``draws`` samples of the same revenue model, reproducible for a seed.

    The shared shock and the new deals' level factor are drawn from the normal itself
    (not the quadrature nodes), so the cross-check also tests both mixtures.
    """
    a = np.asarray(amounts, dtype=float)
    p = np.asarray(probs, dtype=float)
    _validate(a, p)
    live = [(r, np.asarray(x, dtype=float), d) for r, x, d in new if r > 0 and len(x)]
    rng = np.random.default_rng(seed)
    ell = None
    if shock_sd > 0 and len(p):
        q, w = shocked_probabilities(p, shock_sd, nodes=41)
        ell = np.log(np.clip(q[20], 1e-300, 1)) - np.log(
            np.clip(1 - q[20], 1e-300, 1)
        )  # node e = 0
    out = np.empty(draws)
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        if ell is not None:
            pr = _sigmoid(ell[None, :] + rng.normal(0.0, shock_sd, (n, 1)))
            pr = np.where(p[None, :] >= 1, 1.0, np.where(p[None, :] <= 0, 0.0, pr))
        else:
            pr = p[None, :]
        total = (rng.random((n, len(a))) < pr).astype(float) @ a if len(a) else np.zeros(n)
        level: float | np.ndarray = 1.0
        if new_level_sd > 0:
            level = np.exp(rng.normal(0.0, new_level_sd, n) - new_level_sd**2 / 2)
        for new_rate, na, disp in live:
            lam = new_rate * level * (rng.gamma(1 / disp, disp, n) if disp > 0 else 1.0)
            counts = rng.poisson(lam, n)
            picks = na[rng.integers(0, len(na), counts.sum())]
            total += np.bincount(np.repeat(np.arange(n), counts), weights=picks, minlength=n)
        out[start : start + n] = won + total
    return out
