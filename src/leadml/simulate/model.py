"""The generative model of the simulated company: every probability the generator draws
from, in one place, so that the ground truth (``truth.py``) uses exactly the same numbers.

Time runs in weeks: week ``t`` is ``[M_t, M_t + 7 days)`` where ``M_t`` is a Monday
00:00 UTC. Hidden state, observed status and hazards are all per week; what happens
inside a week (timestamps of events, calls, stage changes) is drawn afterwards and
never feeds back into the hidden dynamics.

Leads
-----
Each lead has fixed hidden traits, all discrete so that the truth can be computed
exactly per *lead type*:

* ``fit`` in 0..3 (poor, fair, good, ideal), derived from firmographics, department
  and job level plus noise (attributes carry part of the signal);
* ``engagement`` in 0..2 (low, medium, high): multiplies every behavioural rate, so
  the same intent looks different on different people (the signal is noisy);
* ``tier`` 0 (manager / individual) or 1 (director and up), and the account's segment.

and a hidden weekly state ``(a, i)``: the account's buying cycle ``a`` (0 = not in
market, 1 = in market; shared by all leads of an account, so a buying committee's
intent is correlated) and the lead's intent ``i`` (0 dormant, 1 researching,
2 evaluating, 3 ready). Each week ``a`` moves by ``ACCOUNT_MARKET`` and then ``i`` by
``INTENT[a_new]``.

Behavioural rates are scaled by a weekly ``season`` factor (holidays of a Japanese
business calendar, a quieter summer), which the truth uses week by week too.

Marketing status is ``N`` (nurturing), ``M`` (MQL waiting for inside sales, with a
priority class) or closed for the horizon (SQL, disqualified). During week ``t``:

* a nurturing lead becomes MQL if its week-``t`` behaviour meets the MQL rule: a
  form submit (a hand-raise, "hot") or, failing that, at least two high-value events
  (pricing page views, content downloads, seminar / webinar attendances; "warm").
  Counts are Poisson, so the rule's probability is closed-form (``mql_probs``);
* an MQL that was waiting at ``M_t`` is worked by IS with probability ``q`` (the share
  of its segment-and-class queue that fits in the week's slots; IS works classes
  highest priority first and picks uniformly at random within a class); once worked it
  becomes SQL with ``P_SQL[fit, i]``, is disqualified with ``P_DQ[fit, i]`` or stays;
  an MQL not worked drifts back to nurture with ``MQL_DECAY``. A worked lead takes
  ``SLOTS_PER_WORKED_LEAD`` 30-minute slots (two touches), so a rep works at most
  ``weekly_slots // 2`` leads a week (fewer in holiday weeks).

Disqualified leads are recycled into nurture 8-25 weeks later, leads of lost deals
6-25 weeks after the loss: longer than the 30-day horizon, so within a horizon SQL
and disqualified are absorbing.

Deals
-----
A deal has a fixed hidden ``quality`` in 0..3 (drawn from the lead's fit) and a weekly
state ``(stage, momentum)`` (momentum 0 = active, 1 = gone cold). Each week momentum
moves, then the stage advances / regresses / is lost / (from approval) is won, with
hazards by segment, quality, momentum and the position of the week in its quarter
(more wins in the last two weeks of a quarter, fewer in its first two).
"""

from __future__ import annotations

import numpy as np

SEGMENTS = ("enterprise", "mid_market", "smb")
N_SEG, N_TIER, N_FIT, N_ENG = 3, 2, 4, 3
N_TYPES = N_SEG * N_TIER * N_FIT * N_ENG
N_AI = 8  # (account in-market a, intent i) pairs, index a * 4 + i
N_STATUS = 3  # 0 nurturing, 1 MQL hot, 2 MQL warm
N_CLASS = 4  # IS priority classes, 0 = highest
INTENT_NAMES = ("dormant", "researching", "evaluating", "ready")

# Account buying cycle: P(a -> a') per week. In-market spells last ~17 weeks, about
# one account in seven is in market at any time.
ACCOUNT_MARKET = np.array([[0.99, 0.01], [0.06, 0.94]])
# Lead intent: P(i -> i' | account state a' after its move), rows sum to 1.
INTENT = np.array(
    [
        [  # account not in market: intent decays towards dormant
            [0.95, 0.045, 0.005, 0.00],
            [0.25, 0.66, 0.08, 0.01],
            [0.12, 0.25, 0.55, 0.08],
            [0.10, 0.12, 0.30, 0.48],
        ],
        [  # account in market: intent climbs
            [0.78, 0.16, 0.05, 0.01],
            [0.08, 0.57, 0.28, 0.07],
            [0.04, 0.10, 0.58, 0.28],
            [0.04, 0.05, 0.21, 0.70],
        ],
    ]
)
ENGAGEMENT_MULT = np.array([0.45, 1.0, 1.9])
ENGAGEMENT_P = np.array([0.3, 0.45, 0.25])

# Behavioural rates per week by intent (Poisson means at engagement 1).
PAGE_CATEGORIES = ("pricing", "case_study", "docs", "blog", "product", "careers")
WEB_VISIT = np.array([0.2, 0.7, 1.4, 1.8])
PAGE_VIEW = np.array(  # rows: categories as above
    [
        [0.01, 0.06, 0.25, 0.50],
        [0.03, 0.20, 0.55, 0.55],
        [0.04, 0.27, 0.60, 0.60],
        [0.20, 0.55, 0.45, 0.40],
        [0.07, 0.47, 0.95, 0.95],
        [0.03, 0.03, 0.03, 0.03],
    ]
)
EMAIL_OPEN = np.array(
    [0.18, 0.28, 0.38, 0.40]
)  # P(open this week's nurture mail), nurturing leads only
EMAIL_CLICK = np.array([0.08, 0.18, 0.30, 0.30])  # P(click | open)
FORM_SUBMIT = np.array([0.001, 0.006, 0.025, 0.10])
CONTENT_DOWNLOAD = np.array([0.008, 0.04, 0.10, 0.08])
WEBINAR_REG = np.array([0.006, 0.025, 0.05, 0.04])
WEBINAR_SHOW = np.array([0.30, 0.45, 0.60, 0.60])
SEMINAR_REG = np.array([0.002, 0.008, 0.025, 0.025])
SEMINAR_SHOW = np.array([0.40, 0.50, 0.60, 0.65])

# Inside sales: outcome of a worked MQL by fit (rows) and intent (columns).
P_SQL = np.array(
    [
        [0.004, 0.015, 0.045, 0.08],
        [0.008, 0.035, 0.10, 0.18],
        [0.015, 0.06, 0.16, 0.27],
        [0.02, 0.08, 0.22, 0.34],
    ]
)
P_DQ = np.array(
    [
        [0.60, 0.50, 0.40, 0.35],
        [0.40, 0.30, 0.22, 0.18],
        [0.30, 0.20, 0.12, 0.10],
        [0.22, 0.14, 0.08, 0.06],
    ]
)
MQL_DECAY = 0.2  # P(an MQL not worked this week returns to nurture)
SLOTS_PER_WORKED_LEAD = 2  # every worked lead takes two 30-minute slots (two touches)

# Deals. State index: stage * 2 + momentum for open states, then WON, LOST.
N_STAGES = 5
N_DEAL = 12
WON, LOST = 10, 11
N_QUALITY = 4
QUALITY_GIVEN_FIT = np.array(
    [
        [0.45, 0.30, 0.18, 0.07],
        [0.25, 0.32, 0.28, 0.15],
        [0.12, 0.25, 0.35, 0.28],
        [0.06, 0.18, 0.36, 0.40],
    ]
)
ADVANCE = np.array([0.30, 0.22, 0.20, 0.24, 0.30])  # per week, mid-market, active, quality 2
SEGMENT_SPEED = np.array([0.48, 1.0, 2.1])  # enterprise, mid_market, smb
QUALITY_SPEED = np.array([0.5, 0.8, 1.0, 1.25])
LOST_BASE = np.array([0.032, 0.052, 0.075])  # per week by segment, active
QUALITY_LOST = np.array([2.4, 1.4, 0.8, 0.45])
COLD_SPEED, COLD_LOST = 0.15, 3.0
REGRESS = (0.02, 0.05)  # active, cold; from problem_recognised onwards
GO_COLD = np.array([0.12, 0.08, 0.05, 0.03])
WARM_UP = np.array([0.08, 0.15, 0.25, 0.35])
# Week position in the quarter: 0 normal, 1 last two weeks before the quarter
# boundary, 2 first two weeks of a quarter.
WIN_WEEK_MULT = np.array([1.0, 2.2, 0.5])
NEGOTIATION_WEEK_MULT = np.array([1.0, 1.5, 0.8])
LOST_WEEK_MULT = np.array([1.0, 1.4, 1.0])
AMOUNT_MEDIAN = np.array([120_000.0, 30_000.0, 7_000.0])
AMOUNT_SIGMA = np.array([0.6, 0.5, 0.45])


def intent_step() -> np.ndarray:
    """P((a, i) -> (a', i')) as an 8 x 8 matrix (index a * 4 + i)."""
    m = np.zeros((N_AI, N_AI))
    for a in range(2):
        for i in range(4):
            for a2 in range(2):
                m[a * 4 + i, a2 * 4 : a2 * 4 + 4] = ACCOUNT_MARKET[a, a2] * INTENT[a2, i]
    return m


def lead_type(seg: np.ndarray, tier: np.ndarray, fit: np.ndarray, eng: np.ndarray) -> np.ndarray:
    """Index of the lead type (segment, tier, fit, engagement) in 0..N_TYPES-1."""
    return ((seg.astype(np.int16) * N_TIER + tier) * N_FIT + fit) * N_ENG + eng


def type_parts(types: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    eng = types % N_ENG
    fit = (types // N_ENG) % N_FIT
    tier = (types // (N_ENG * N_FIT)) % N_TIER
    seg = types // (N_ENG * N_FIT * N_TIER)
    return seg, tier, fit, eng


def hot_warm_rates() -> tuple[np.ndarray, np.ndarray]:
    """Poisson means per week at engagement 1, by intent: hand-raises (form submits)
    and other high-value events (pricing views, downloads, attendances)."""
    warm = PAGE_VIEW[0] + CONTENT_DOWNLOAD + WEBINAR_REG * WEBINAR_SHOW + SEMINAR_REG * SEMINAR_SHOW
    return FORM_SUBMIT.copy(), warm


def mql_probs(season: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """P(hot MQL), P(warm MQL) in one week for a nurturing lead, shape (N_ENG, 4 intents),
    in a week whose behaviour is scaled by ``season`` (see :func:`season`).

    hot: at least one form submit; warm: no form submit and at least two other
    high-value events (independent Poisson counts)."""
    hot_rate, warm_rate = hot_warm_rates()
    h = season * ENGAGEMENT_MULT[:, None] * hot_rate[None, :]
    b = season * ENGAGEMENT_MULT[:, None] * warm_rate[None, :]
    p_hot = 1.0 - np.exp(-h)
    p_warm = np.exp(-h) * (1.0 - np.exp(-b) * (1.0 + b))
    return p_hot, p_warm


# Holidays of a Japanese business calendar (month, first day, last day, activity).
HOLIDAYS = ((12, 29, 31, 0.25), (1, 1, 3, 0.25), (4, 29, 30, 0.5), (5, 1, 5, 0.4), (8, 13, 16, 0.5))
SUMMER = 0.9  # July and August are a little quieter


def season(mondays: np.ndarray) -> np.ndarray:
    """Weekly activity multiplier (behaviour, lead arrivals, IS and FS time): the mean
    over the week's Monday..Friday of a per-day factor that is low on holidays."""
    days = mondays.astype("datetime64[D]")[:, None] + np.arange(5)
    months = days.astype("datetime64[M]")
    month = months.astype(np.int64) % 12 + 1
    dom = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    factor = np.where((month == 7) | (month == 8), SUMMER, 1.0)
    for m, lo, hi, f in HOLIDAYS:
        factor = np.where((month == m) & (dom >= lo) & (dom <= hi), f, factor)
    return factor.mean(axis=1)


def priority_class(hot: np.ndarray, tier: np.ndarray) -> np.ndarray:
    """IS priority class, 0 highest: hot senior, hot junior, warm senior, warm junior."""
    return np.where(hot, 0, 2) + (1 - tier)


def quarter_starts(first: np.datetime64, last: np.datetime64) -> np.ndarray:
    """Quarter boundaries (first day of a quarter, 00:00 UTC) covering [first, last]."""
    m0 = first.astype("datetime64[M]")
    m0 = m0 - (m0.astype(int) % 3)
    m1 = last.astype("datetime64[M]") + 3
    months = np.arange(m0, m1 + 1, 3, dtype="datetime64[M]")
    return months.astype("datetime64[D]")


def week_kind(mondays: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """0 normal, 1 one of the last two weeks before a quarter boundary (a week counts
    as before the boundary when it starts before it), 2 one of the first two weeks
    of a quarter."""
    mondays_d = mondays.astype("datetime64[D]")
    nxt = boundaries[np.searchsorted(boundaries, mondays_d, side="right")]
    prev = boundaries[np.searchsorted(boundaries, mondays_d, side="right") - 1]
    weeks_left = np.ceil((nxt - mondays_d).astype(int) / 7.0)
    weeks_in = (mondays_d - prev).astype(int) // 7
    kind = np.zeros(len(mondays), dtype=np.int8)
    kind[weeks_in < 2] = 2
    kind[weeks_left <= 2] = 1
    return kind


def deal_step(seg: int, quality: int, kind: int) -> np.ndarray:
    """P(state -> state') for one week of a deal, shape (12, 12)."""
    m = np.zeros((N_DEAL, N_DEAL))
    m[WON, WON] = m[LOST, LOST] = 1.0
    for s in range(N_STAGES):
        for mom in range(2):
            src = s * 2 + mom
            p_cold = GO_COLD[quality] if mom == 0 else 1.0 - WARM_UP[quality]
            for mom2, pm in ((0, 1.0 - p_cold), (1, p_cold)):
                speed = (
                    ADVANCE[s]
                    * SEGMENT_SPEED[seg]
                    * QUALITY_SPEED[quality]
                    * (COLD_SPEED if mom2 else 1.0)
                )
                if s == N_STAGES - 1:
                    speed *= WIN_WEEK_MULT[kind]
                elif s == N_STAGES - 2:
                    speed *= NEGOTIATION_WEEK_MULT[kind]
                lost = (
                    LOST_BASE[seg]
                    * QUALITY_LOST[quality]
                    * (COLD_LOST if mom2 else 1.0)
                    * LOST_WEEK_MULT[kind]
                )
                back = REGRESS[mom2] if s > 0 else 0.0
                total = speed + lost + back
                if total > 0.9:
                    speed, lost, back = (x * 0.9 / total for x in (speed, lost, back))
                fwd = WON if s == N_STAGES - 1 else (s + 1) * 2 + mom2
                m[src, fwd] += pm * speed
                m[src, LOST] += pm * lost
                if back:
                    m[src, (s - 1) * 2 + mom2] += pm * back
                m[src, s * 2 + mom2] += pm * (1.0 - speed - lost - back)
    return m


def deal_steps() -> np.ndarray:
    """All deal step matrices, shape (N_SEG, N_QUALITY, 3 week kinds, 12, 12)."""
    return np.array(
        [[[deal_step(g, q, k) for k in range(3)] for q in range(N_QUALITY)] for g in range(N_SEG)]
    )
