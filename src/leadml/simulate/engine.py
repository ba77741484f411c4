"""The weekly, vectorised simulation of a THE MODEL company.

The whole company advances one week at a time (see :mod:`leadml.simulate.model`
for the generative model). Per-lead state is a handful of small numpy arrays, so
memory grows with the number of leads, not of events: behavioural events are
generated for all active leads of a week at once and streamed to Parquet parts,
and IS capacity, which couples every lead of a segment, is resolved once per week
over the whole queue. Nothing loops over leads or events in Python.

Randomness comes from one ``numpy.random.Generator`` per purpose, spawned from
the seed, and every draw happens in a fixed order, so the same seed gives the same
bytes in every file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from leadml.simulate import model as mdl
from leadml.simulate import truth as tr

US = 1_000_000
DAY_US = 86_400 * US
WEEK_US = 7 * DAY_US
EVENT_TYPES = (
    "web_visit",
    "page_view",
    "email_open",
    "email_click",
    "form_submit",
    "content_download",
    "seminar_registered",
    "seminar_attended",
    "webinar_registered",
    "webinar_attended",
)
ET = {name: i for i, name in enumerate(EVENT_TYPES)}
LEAD_STATUSES = ("lead", "nurturing", "mql", "sql", "disqualified", "recycled")
LS = {name: i for i, name in enumerate(LEAD_STATUSES)}
STAGES = (
    "follow_up",
    "problem_recognised",
    "evaluation",
    "negotiation",
    "approval",
    "closed_won",
    "closed_lost",
)
ACTIVITY_TYPES = ("call", "connect", "email", "meeting", "demo")
AT = {name: i for i, name in enumerate(ACTIVITY_TYPES)}
SEG_SHORT = ("ENT", "MM", "SMB")

INDUSTRIES = (
    "software",
    "financial_services",
    "professional_services",
    "manufacturing",
    "healthcare",
    "retail",
    "logistics",
    "media",
    "education",
    "public_sector",
)
INDUSTRY_P = np.array([0.16, 0.10, 0.12, 0.16, 0.09, 0.10, 0.08, 0.07, 0.06, 0.06])
INDUSTRY_FIT = np.array([0.9, 0.6, 0.6, 0.2, 0.0, 0.0, -0.1, 0.1, -0.6, -0.8])
COUNTRIES = ("JP", "US", "GB", "DE", "SG", "AU", "FR", "KR")
COUNTRY_P = np.array([0.55, 0.15, 0.07, 0.06, 0.05, 0.05, 0.04, 0.03])
SEGMENT_P = np.array([0.12, 0.33, 0.55])
EXTRA_LEADS_PER_ACCOUNT = np.array([5.0, 2.0, 0.5])
EMPLOYEES_MEDIAN = np.array([8000.0, 600.0, 60.0])
JOB_LEVELS = ("c_level", "vp", "director", "manager", "individual")
JOB_LEVEL_P = np.array([0.06, 0.10, 0.18, 0.33, 0.33])
JOB_LEVEL_FIT = np.array([0.3, 0.4, 0.4, 0.1, -0.3])
DEPARTMENTS = ("it", "marketing", "sales", "finance", "operations", "hr", "other")
DEPARTMENT_P = np.array([0.25, 0.15, 0.15, 0.12, 0.18, 0.08, 0.07])
DEPARTMENT_FIT = np.array([0.6, 0.3, 0.4, 0.0, 0.1, -0.4, -0.7])
SEGMENT_FIT = np.array([0.2, 0.2, -0.1])
FIT_CUTS = np.array([-0.45, 0.3, 1.0])
SOURCES = (
    "web_form",
    "webinar",
    "seminar",
    "content_syndication",
    "paid_search",
    "referral",
    "list_import",
)
SOURCE_P = np.array([0.25, 0.12, 0.10, 0.18, 0.15, 0.05, 0.15])
SOURCE_INBOUND = np.array([1, 1, 0, 0, 1, 1, 0], dtype=bool)
INITIAL_INTENT = np.array([[0.75, 0.18, 0.05, 0.02], [0.35, 0.40, 0.18, 0.07]])  # outbound, inbound
SOURCE_FIRST_EVENT = (
    ET["form_submit"],
    ET["webinar_registered"],
    ET["seminar_attended"],
    ET["content_download"],
    ET["form_submit"],
    -1,
    -1,
)
IMPORT_SHARE = 0.2  # leads already in the database at the start (imported in week 0)
INITIAL_PIPELINE_SHARE = 0.03  # of week-0 leads, imported with an open deal
INITIAL_STAGE_P = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
DAY_WEIGHTS = np.array([0.19, 0.19, 0.19, 0.18, 0.15, 0.05, 0.05])
DQ_RECYCLE_WEEKS = (8, 26)
LOST_RECYCLE_WEEKS = (6, 26)
TYPICAL_CYCLE_WEEKS = np.array([26.0, 14.0, 8.0])
FS_RATES_ACTIVE = {  # per deal-week by stage
    "call": np.array([1.0, 0.8, 0.8, 0.9, 0.7]),
    "email": np.array([1.2, 1.0, 1.0, 1.2, 1.0]),
    "meeting": np.array([0.3, 0.6, 0.5, 0.7, 0.5]),
    "demo": np.array([0.15, 0.35, 0.6, 0.15, 0.05]),
}
FS_RATES_COLD = {"call": 0.25, "email": 0.4, "meeting": 0.04, "demo": 0.02}


@dataclass
class Company:
    """Static part of the company: accounts, leads (sorted by creation), reps."""

    n_weeks: int
    start_us: int
    acc_seg: np.ndarray
    acc_industry: np.ndarray
    acc_employees: np.ndarray
    acc_country: np.ndarray
    acc_created: np.ndarray
    lead_acc: np.ndarray
    lead_created: np.ndarray
    lead_week: np.ndarray
    lead_seg: np.ndarray
    lead_tier: np.ndarray
    lead_fit: np.ndarray
    lead_eng: np.ndarray
    lead_type: np.ndarray
    lead_source: np.ndarray
    lead_job: np.ndarray
    lead_dept: np.ndarray
    is_reps: np.ndarray  # per segment
    fs_reps: np.ndarray

    @property
    def n_leads(self) -> int:
        return len(self.lead_acc)


def _month_end_days(days: np.ndarray) -> np.ndarray:
    """Last day of the month of each day number (days since epoch)."""
    months = days.astype("datetime64[D]").astype("datetime64[M]") + 1
    return months.astype("datetime64[D]").astype(np.int64) - 1


def build_company(
    n_leads: int, start_us: int, n_weeks: int, rng: np.random.Generator, is_reps: int, fs_reps: int
) -> Company:
    """Accounts, leads with their hidden traits and arrival times, and rep counts."""
    mean_size = float(SEGMENT_P @ (1.0 + EXTRA_LEADS_PER_ACCOUNT))
    n_acc = int(n_leads / mean_size * 1.3) + 10
    seg = rng.choice(3, size=n_acc, p=SEGMENT_P).astype(np.int8)
    size = 1 + rng.poisson(EXTRA_LEADS_PER_ACCOUNT[seg])
    n_acc = int(np.searchsorted(np.cumsum(size), n_leads) + 1)
    seg, size = seg[:n_acc], size[:n_acc]
    lead_acc = np.repeat(np.arange(n_acc, dtype=np.int32), size)[:n_leads]
    industry = rng.choice(len(INDUSTRIES), size=n_acc, p=INDUSTRY_P).astype(np.int8)
    employees = np.maximum(
        2, np.round(EMPLOYEES_MEDIAN[seg] * np.exp(rng.normal(0.0, 0.55, n_acc)))
    ).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=n_acc, p=COUNTRY_P).astype(np.int8)

    # arrival: a fifth imported in week 0, the rest with a rising weekly intensity
    imported = rng.random(n_leads) < IMPORT_SHARE
    mondays = ((start_us + np.arange(n_weeks, dtype=np.int64) * WEEK_US) // US).astype(
        "datetime64[s]"
    )
    w = np.linspace(1.0, 1.8, n_weeks) * mdl.season(mondays)
    week = rng.choice(n_weeks, size=n_leads, p=w / w.sum())
    week[imported] = 0
    offset = (rng.random(n_leads) * 6.5 * DAY_US).astype(np.int64)
    created = start_us + week.astype(np.int64) * WEEK_US + offset
    lead_acc = lead_acc[rng.permutation(n_leads)]
    order = np.lexsort((lead_acc, created))
    lead_acc, created, imported = lead_acc[order], created[order], imported[order]
    week = ((created - start_us) // WEEK_US).astype(np.int32)
    acc_created = np.full(n_acc, np.iinfo(np.int64).max)
    np.minimum.at(acc_created, lead_acc, created)
    acc_created = acc_created - (rng.random(n_acc) * 30 * DAY_US).astype(np.int64)

    lseg = seg[lead_acc]
    job = rng.choice(len(JOB_LEVELS), size=n_leads, p=JOB_LEVEL_P).astype(np.int8)
    dept = rng.choice(len(DEPARTMENTS), size=n_leads, p=DEPARTMENT_P).astype(np.int8)
    z = (
        INDUSTRY_FIT[industry[lead_acc]]
        + DEPARTMENT_FIT[dept]
        + JOB_LEVEL_FIT[job]
        + SEGMENT_FIT[lseg]
        + rng.normal(0.0, 0.7, n_leads)
    )
    fit = np.searchsorted(FIT_CUTS, z).astype(np.int8)
    eng = rng.choice(mdl.N_ENG, size=n_leads, p=mdl.ENGAGEMENT_P).astype(np.int8)
    tier = (job <= 2).astype(np.int8)
    source = rng.choice(len(SOURCES), size=n_leads, p=SOURCE_P).astype(np.int8)
    source[imported] = np.where(rng.random(int(imported.sum())) < 0.7, 6, 2)

    per_seg = np.bincount(lseg, minlength=3).astype(float)
    share = per_seg / max(per_seg.sum(), 1.0)
    is_n = (
        _split(is_reps, share) if is_reps else np.maximum(1, np.round(per_seg / 2500.0)).astype(int)
    )
    fs_n = (
        _split(fs_reps, share) if fs_reps else np.maximum(1, np.round(per_seg / 1200.0)).astype(int)
    )
    return Company(
        n_weeks=n_weeks,
        start_us=start_us,
        acc_seg=seg,
        acc_industry=industry,
        acc_employees=employees,
        acc_country=country,
        acc_created=acc_created,
        lead_acc=lead_acc,
        lead_created=created,
        lead_week=week,
        lead_seg=lseg,
        lead_tier=tier,
        lead_fit=fit,
        lead_eng=eng,
        lead_type=mdl.lead_type(lseg, tier, fit, eng),
        lead_source=source,
        lead_job=job,
        lead_dept=dept,
        is_reps=is_n,
        fs_reps=fs_n,
    )


def _split(total: int, share: np.ndarray) -> np.ndarray:
    n = np.maximum(1, np.floor(total * share)).astype(int)
    n[np.argmax(share)] += max(0, total - int(n.sum()))
    return n


# --------------------------------------------------------------------- output


class Rows:
    """Column chunks of one table, concatenated when written."""

    def __init__(self, *names: str) -> None:
        self.cols: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def add(self, **arrays: np.ndarray) -> None:
        n = {len(a) for a in arrays.values()}
        assert len(n) == 1 and set(arrays) == set(self.cols), (set(arrays), n)
        if next(iter(n)):
            for k, v in arrays.items():
                self.cols[k].append(v)

    def get(self) -> dict[str, np.ndarray]:
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self.cols.items()}

    def __len__(self) -> int:
        first = next(iter(self.cols.values()))
        return int(sum(len(a) for a in first))

    def clear(self) -> None:
        for v in self.cols.values():
            v.clear()


def ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=pa.timestamp("us", tz="UTC"))


def take_str(names: pa.Array, codes: np.ndarray) -> pa.Array:
    """Strings from a lookup array by code; negative codes become null."""
    codes = np.asarray(codes)
    mask = codes < 0
    idx = pa.array(np.where(mask, 0, codes).astype(np.int64), mask=mask if mask.any() else None)
    return names.take(idx)


def write_table(columns: dict[str, pa.Array], path: Path, **options: object) -> None:
    pq.write_table(pa.table(columns), path, compression="zstd", **options)


# Event parts: dictionary pages only for the few-valued columns, delta-encoded
# (sorted) timestamps; about twice as fast to write as the defaults and smaller.
EVENT_PARQUET = {
    "use_dictionary": ["type", "page_category", "campaign_id"],
    "column_encoding": {"ts": "DELTA_BINARY_PACKED"},
}


@dataclass
class Names:
    lead: pa.Array
    account: pa.Array
    campaigns: list[str] = field(default_factory=list)
    campaign_code: dict[str, int] = field(default_factory=dict)

    def campaign(self, name: str) -> int:
        if name not in self.campaign_code:
            self.campaign_code[name] = len(self.campaigns)
            self.campaigns.append(name)
        return self.campaign_code[name]


# ------------------------------------------------------------------ simulation


class Simulation:
    """Runs the weekly loop and streams every table into ``out`` (a folder).

    Time semantics: week ``t`` covers ``[M_t, M_t + 7 days)``; every record made in
    week ``t`` has a timestamp inside it. Truth rows are computed for as-of ``M_t``
    from the hidden state before anything of week ``t`` happens.
    """

    def __init__(
        self,
        company: Company,
        out: Path,
        seed: int,
        weekly_slots: int,
        progress: Callable[[str, float], None] | None = None,
        part_rows: int = 4_000_000,
    ) -> None:
        self.c = company
        self.out = out
        self.weekly_slots = weekly_slots
        self.new_sql: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.progress = progress
        self.part_rows = part_rows
        ss = np.random.SeedSequence([seed, 1])
        self.rng_market, self.rng_events, self.rng_is, self.rng_deals = (
            np.random.default_rng(s) for s in ss.spawn(4)
        )
        n = company.n_leads
        T = company.n_weeks
        self.T = T
        self.mondays_us = company.start_us + np.arange(T + 300, dtype=np.int64) * WEEK_US
        self.end_us = company.start_us + T * WEEK_US
        mondays = (self.mondays_us // US).astype("datetime64[s]")
        self.boundaries = mdl.quarter_starts(mondays[0], mondays[-1])
        self.boundaries_us = self.boundaries.astype("datetime64[us]").astype(np.int64)
        self.kinds = mdl.week_kind(mondays, self.boundaries)
        # first week starting on/after each boundary
        self.boundary_week = np.searchsorted(self.mondays_us, self.boundaries_us, side="left")
        # weekdays of week t before a quarter boundary inside it (5 if none inside)
        self.won_days = np.full(len(self.mondays_us), 5, dtype=np.int64)
        inside = (self.boundaries_us[:, None] > self.mondays_us[None, :]) & (
            self.boundaries_us[:, None] < self.mondays_us[None, :] + WEEK_US
        )
        bi, wi = np.nonzero(inside)
        self.won_days[wi] = np.minimum(5, (self.boundaries_us[bi] - self.mondays_us[wi]) // DAY_US)
        self.steps = mdl.deal_steps()
        self.step_cum = np.cumsum(self.steps, axis=-1)
        self.deal_table = tr.deal_truth_tables(self.steps, self.kinds, self.boundary_week)
        self.deal_rolling = tr.deal_rolling_table(self.steps, self.kinds, tr.DEAL_HORIZON_WEEKS)
        self.intent_cum = np.cumsum(mdl.INTENT, axis=-1)
        self.season = mdl.season(mondays)

        # lead state
        self.market = (self.rng_market.random(len(company.acc_seg)) < 0.23).astype(np.int8)
        self.intent = np.zeros(n, dtype=np.int8)
        self.status = np.zeros(n, dtype=np.int8)  # 0 new, 1 N, 2 MQL, 3 SQL, 4 DQ
        self.hot = np.zeros(n, dtype=np.int8)
        self.recycle_week = np.full(n, -1, dtype=np.int32)
        self.n_active = 0
        # IS queue per week: queued[seg, class, t] leads, left[seg, class, t] capacity
        # (in leads) left for the class after the higher ones; members[t] who was queued
        self.queued = np.zeros((mdl.N_SEG, mdl.N_CLASS, T + 5))
        self.left = np.zeros((mdl.N_SEG, mdl.N_CLASS, T + 5))
        self.members: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.is_worked = np.zeros((mdl.N_SEG, T), dtype=np.int64)
        self.snapshots: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # deals (growable)
        self.d: dict[str, np.ndarray] = {
            k: np.zeros(0, dtype=dt)
            for k, dt in (
                ("lead", np.int32),
                ("seg", np.int8),
                ("quality", np.int8),
                ("state", np.int8),
                ("week", np.int32),
                ("owner", np.int32),
                ("amount", np.float64),
                ("ecd", np.int64),
                ("pushed", np.int8),
                ("created", np.int64),
                ("closed", np.int64),
            )
        }
        self.is_offset = np.concatenate([[0], np.cumsum(company.is_reps)])
        self.fs_offset = np.concatenate([[0], np.cumsum(company.fs_reps)])
        self.n_is = int(company.is_reps.sum())

        self.events = Rows("lead", "ts", "type", "cat", "campaign")
        self.event_parts = 0
        self.event_rows = 0
        self.status_rows = Rows("lead", "ts", "status")
        self.opp_hist = Rows("opp", "ts", "stage", "amount", "ecd")
        self.acts = Rows("ts", "rep", "lead", "opp", "type")
        self.names = Names(
            lead=pa.array([f"L{i:07d}" for i in range(n)]),
            account=pa.array([f"A{i:06d}" for i in range(len(company.acc_seg))]),
        )
        self.lead_truth_rows = 0
        self.deal_truth_rows = 0
        self.lead_truth_writer: pq.ParquetWriter | None = None
        self.deal_truth_writer: pq.ParquetWriter | None = None
        self.deal_truth_buf = Rows("opp", "as_of", "period_end", "p", "state")
        self.lead_truth_buf = Rows("lead", "as_of", "p", "ai")

    # ---------------------------------------------------------------- helpers

    def _times(self, rng: np.random.Generator, n: int, t: int) -> np.ndarray:
        day = np.searchsorted(
            np.cumsum(DAY_WEIGHTS), rng.random(n) * DAY_WEIGHTS.sum(), side="right"
        )
        day = np.minimum(day, 6)
        sec = rng.integers(7 * 3600, 23 * 3600, n)
        return self.mondays_us[t] + day * DAY_US + sec * US + rng.integers(0, US, n)

    def _weekday_times(
        self, rng: np.random.Generator, n: int, t: int, days: np.ndarray | int = 5
    ) -> np.ndarray:
        """A weekday (uniform over the first ``days`` weekdays) at 9:00-13:00."""
        day = np.floor(rng.random(n) * days).astype(np.int64)
        return self.mondays_us[t] + day * DAY_US + 9 * 3600 * US + rng.integers(0, 4 * 3600 * US, n)

    def _status(self, lead: np.ndarray, ts: np.ndarray, status: str) -> None:
        self.status_rows.add(
            lead=lead.astype(np.int32), ts=ts, status=np.full(len(lead), LS[status], np.int8)
        )

    # ---------------------------------------------------------------- the week

    def run(self) -> None:
        for t in range(self.T):
            self._snapshot(t)
            self._deal_truth(t)
            self._market_and_intent(t)
            counts = self._events(t)
            self._lead_status(t, counts)
            self._deals(t)
            self._new_leads(t)
            if t >= tr.HORIZON_WEEKS - 1:
                self._lead_truth(t - tr.HORIZON_WEEKS + 1)
            if len(self.events) >= self.part_rows:
                self._flush_events()
            if self.progress:
                self.progress("simulating weeks", (t + 1) / self.T)
        self._flush_events()

    def _snapshot(self, t: int) -> None:
        """Hidden state of every open lead at M_t (nurturing or MQL, created before M_t)."""
        st = self.status[: self.n_active]
        idx = np.flatnonzero((st == 1) | (st == 2)).astype(np.int32)
        ai = self.market[self.c.lead_acc[idx]].astype(np.int16) * 4 + self.intent[idx]
        s = np.where(st[idx] == 1, 0, np.where(self.hot[idx] == 1, 1, 2))
        code = (self.c.lead_type[idx].astype(np.int32) * mdl.N_AI + ai) * mdl.N_STATUS + s
        self.snapshots[t] = (idx, code)

    def _lead_truth(self, w: int) -> None:
        idx, code = self.snapshots.pop(w)
        if w < 1 or self.mondays_us[w] + 30 * DAY_US > self.end_us or not len(idx):
            self.members.pop(w, None)
            return
        weeks = slice(w, w + tr.HORIZON_WEEKS)
        # which of the five weeks' IS queues each lead really was in (0 or 1 + class)
        pattern = np.zeros(len(idx), dtype=np.int64)
        for k in range(tr.HORIZON_WEEKS):
            q_idx, q_cls = self.members[w + k]
            pos = np.minimum(np.searchsorted(idx, q_idx), len(idx) - 1)
            hit = idx[pos] == q_idx
            pattern[pos[hit]] += (q_cls[hit] + 1) * (mdl.N_CLASS + 1) ** k
        kinds, which = np.unique(pattern, return_inverse=True)
        digits = (kinds[:, None] // (mdl.N_CLASS + 1) ** np.arange(tr.HORIZON_WEEKS)) % (
            mdl.N_CLASS + 1
        )
        q = tr.service_probabilities(self.queued[:, :, weeks], self.left[:, :, weeks], digits)
        table = tr.lead_truth_table(q, self.season[weeks]).reshape(len(kinds), -1)
        self.lead_truth_buf.add(
            lead=idx,
            as_of=np.full(len(idx), self.mondays_us[w]),
            p=table[which, code],
            ai=((code // mdl.N_STATUS) % mdl.N_AI).astype(np.int8),
        )
        del self.members[w]
        self._flush_truth()

    def _deal_truth(self, t: int) -> None:
        d = self.d
        idx = np.flatnonzero((d["week"] < t) & (d["state"] < mdl.WON))
        if not len(idx):
            return
        first = int(np.searchsorted(self.boundaries_us, self.mondays_us[t], side="right"))
        ends = [(self.boundaries_us[j], self.deal_table[j, t]) for j in range(first, first + 4)]
        rolling = self.mondays_us[t] + tr.DEAL_HORIZON_WEEKS * WEEK_US
        if rolling not in self.boundaries_us[first : first + 4]:  # else already a row
            ends.append((rolling, self.deal_rolling[t]))
        for end, table in ends:
            self.deal_truth_buf.add(
                opp=idx.astype(np.int32),
                as_of=np.full(len(idx), self.mondays_us[t]),
                period_end=np.full(len(idx), end),
                p=table[d["seg"][idx], d["quality"][idx], d["state"][idx]],
                state=d["state"][idx],
            )

    def _market_and_intent(self, t: int) -> None:
        u = self.rng_market.random(len(self.market))
        stay = np.where(self.market == 1, mdl.ACCOUNT_MARKET[1, 1], mdl.ACCOUNT_MARKET[0, 0])
        self.market = np.where(u < stay, self.market, 1 - self.market).astype(np.int8)
        n = self.n_active
        if not n:
            return
        a = self.market[self.c.lead_acc[:n]]
        cum = self.intent_cum[a, self.intent[:n]]
        u = self.rng_market.random(n)
        self.intent[:n] = (u[:, None] >= cum[:, :3]).sum(axis=1).astype(np.int8)

    def _events(self, t: int) -> dict[str, np.ndarray]:
        """Behavioural events of week t for every active lead; returns the per-lead
        counts the MQL rule reads."""
        n = self.n_active
        rng = self.rng_events
        if not n:
            return {}
        i = self.intent[:n]
        mult = mdl.ENGAGEMENT_MULT[self.c.lead_eng[:n]] * self.season[t]
        hot_n = np.zeros(n, dtype=np.int64)
        warm_n = np.zeros(n, dtype=np.int64)
        warm_last = np.zeros(n, dtype=np.int64)

        def emit(
            counts: np.ndarray, etype: str, cat: int = -1, campaign: np.ndarray | None = None
        ) -> tuple:
            lead = np.repeat(np.arange(n, dtype=np.int32), counts)
            ts = self._times(rng, len(lead), t)
            camp = np.full(len(lead), -1, np.int32) if campaign is None else campaign[lead]
            self.events.add(
                lead=lead,
                ts=ts,
                type=np.full(len(lead), ET[etype], np.int8),
                cat=np.full(len(lead), cat, np.int8),
                campaign=camp,
            )
            return lead, ts

        emit(rng.poisson(mdl.WEB_VISIT[i] * mult), "web_visit")
        for c in range(len(mdl.PAGE_CATEGORIES)):
            lead, ts = emit(rng.poisson(mdl.PAGE_VIEW[c][i] * mult), "page_view", cat=c)
            if mdl.PAGE_CATEGORIES[c] == "pricing":
                np.add.at(warm_n, lead, 1)
                np.maximum.at(warm_last, lead, ts)
        lead, ts = emit(rng.poisson(mdl.CONTENT_DOWNLOAD[i] * mult), "content_download")
        np.add.at(warm_n, lead, 1)
        np.maximum.at(warm_last, lead, ts)
        lead, ts = emit(rng.poisson(mdl.FORM_SUBMIT[i] * mult), "form_submit")
        np.add.at(hot_n, lead, 1)
        np.maximum.at(warm_last, lead, ts)
        # nurture e-mail to nurturing leads: one per segment and week
        iso = np.datetime64(int(self.mondays_us[t]), "us").astype(object).isocalendar()
        seg_camp = np.array(
            [self.names.campaign(f"NUR-{s}-{iso[0]}W{iso[1]:02d}") for s in SEG_SHORT], np.int32
        )
        nurt = self.status[:n] == 1
        opened = nurt & (rng.random(n) < mdl.EMAIL_OPEN[i] * np.minimum(mult, 1.5) / 1.5)
        lead = np.flatnonzero(opened).astype(np.int32)
        ts_open = self._times(rng, len(lead), t)
        camp = seg_camp[self.c.lead_seg[lead]]
        self.events.add(
            lead=lead,
            ts=ts_open,
            type=np.full(len(lead), ET["email_open"], np.int8),
            cat=np.full(len(lead), -1, np.int8),
            campaign=camp,
        )
        click = rng.random(len(lead)) < mdl.EMAIL_CLICK[i[lead]]
        ts_click = np.minimum(
            ts_open[click] + rng.integers(10 * US, 3600 * US, int(click.sum())),
            self.mondays_us[t + 1] - 1,
        )
        self.events.add(
            lead=lead[click],
            ts=ts_click,
            type=np.full(int(click.sum()), ET["email_click"], np.int8),
            cat=np.full(int(click.sum()), -1, np.int8),
            campaign=camp[click],
        )
        # webinars (monthly campaign) and seminars (quarterly), with no-shows
        day = np.datetime64(int(self.mondays_us[t]), "us").astype("datetime64[D]")
        month = str(day.astype("datetime64[M]"))
        qtr = f"{month[:4]}Q{(int(month[5:7]) - 1) // 3 + 1}"
        for kind, reg_rate, show, cname in (
            ("webinar", mdl.WEBINAR_REG, mdl.WEBINAR_SHOW, f"WBN-{month}"),
            ("seminar", mdl.SEMINAR_REG, mdl.SEMINAR_SHOW, f"SEM-{qtr}"),
        ):
            code = np.full(n, self.names.campaign(cname), np.int32)
            lead, ts = emit(rng.poisson(reg_rate[i] * mult), f"{kind}_registered", campaign=code)
            came = rng.random(len(lead)) < show[i[lead]]
            lead = lead[came]
            ts_att = np.minimum(
                ts[came] + rng.integers(3600 * US, 48 * 3600 * US, len(lead)),
                self.mondays_us[t + 1] - 1,
            )
            self.events.add(
                lead=lead,
                ts=ts_att,
                type=np.full(len(lead), ET[f"{kind}_attended"], np.int8),
                cat=np.full(len(lead), -1, np.int8),
                campaign=code[lead],
            )
            np.add.at(warm_n, lead, 1)
            np.maximum.at(warm_last, lead, ts_att)
        return {"hot": hot_n, "warm": warm_n, "last": warm_last}

    def _lead_status(self, t: int, counts: dict[str, np.ndarray]) -> None:
        n = self.n_active
        self.members[t] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if not n:
            return
        rng = self.rng_is
        c = self.c
        st0 = self.status[:n].copy()
        mon = self.mondays_us[t]
        nxt = self.mondays_us[t + 1]

        # IS works the MQL queue of M_t, highest class first, random within a class
        queue = np.flatnonzero(st0 == 2)
        seg = c.lead_seg[queue].astype(np.int64)
        cls = mdl.priority_class(
            self.hot[queue].astype(np.int64), c.lead_tier[queue].astype(np.int64)
        )
        group = seg * mdl.N_CLASS + cls
        key = rng.random(len(queue))
        order = np.lexsort((key, group))
        queue, group = queue[order], group[order]
        self.members[t] = (queue, (group % mdl.N_CLASS).astype(np.int64))
        n_group = np.bincount(group, minlength=mdl.N_SEG * mdl.N_CLASS).reshape(
            mdl.N_SEG, mdl.N_CLASS
        )
        per_rep = max(1, self.weekly_slots // mdl.SLOTS_PER_WORKED_LEAD)
        cap = np.floor(c.is_reps * per_rep * self.season[t]).astype(np.int64)  # leave on holidays
        take = np.zeros_like(n_group)
        for g in range(mdl.N_SEG):
            left = int(cap[g])
            for k in range(mdl.N_CLASS):
                take[g, k] = min(left, n_group[g, k])
                self.queued[g, k, t], self.left[g, k, t] = n_group[g, k], left
                left -= take[g, k]
        self.is_worked[:, t] = take.sum(axis=1)
        start = np.concatenate([[0], np.cumsum(n_group.reshape(-1))])[group]
        rank = np.arange(len(queue)) - start
        worked = rank < take.reshape(-1)[group]
        w_lead = queue[worked]
        w_seg = group[worked] // mdl.N_CLASS
        # position inside the segment's worked list -> rep (never more than per_rep each)
        seg_start = np.concatenate([[0], np.cumsum(take.sum(axis=1))])
        pos = np.arange(len(w_lead)) - seg_start[w_seg]
        rep = self.is_offset[w_seg] + pos // per_rep
        ii = self.intent[w_lead]
        ff = c.lead_fit[w_lead]
        u = rng.random(len(w_lead))
        p_sql = mdl.P_SQL[ff, ii]
        sql = u < p_sql
        dq = ~sql & (u < p_sql + mdl.P_DQ[ff, ii])
        t1 = self._weekday_times(rng, len(w_lead), t)
        t2 = t1 + rng.integers(1800 * US, 4 * 3600 * US, len(w_lead))
        first = np.where(sql, AT["connect"], AT["call"]).astype(np.int8)
        second = np.where(sql, AT["meeting"], np.where(dq, AT["connect"], AT["email"])).astype(
            np.int8
        )
        none = np.full(len(w_lead), -1, np.int32)
        self.acts.add(
            ts=t1, rep=rep.astype(np.int32), lead=w_lead.astype(np.int32), opp=none, type=first
        )
        self.acts.add(
            ts=t2, rep=rep.astype(np.int32), lead=w_lead.astype(np.int32), opp=none, type=second
        )
        done = t2 + 1800 * US
        self._status(w_lead[sql], done[sql], "sql")
        self._status(w_lead[dq], done[dq], "disqualified")
        self.status[w_lead[sql]] = 3
        self.status[w_lead[dq]] = 4
        lo, hi = DQ_RECYCLE_WEEKS
        self.recycle_week[w_lead[dq]] = t + rng.integers(lo, hi, int(dq.sum()))
        self.new_sql = (w_lead[sql], done[sql])
        # MQLs not worked drift back to nurture
        idle = queue[~worked]
        back = idle[rng.random(len(idle)) < mdl.MQL_DECAY]
        self._status(back, mon + (rng.random(len(back)) * 7 * DAY_US).astype(np.int64), "nurturing")
        self.status[back] = 1

        # MQL rule on this week's behaviour of leads nurturing at M_t
        hot = (counts["hot"] > 0) & (st0 == 1)
        warm = (counts["hot"] == 0) & (counts["warm"] >= 2) & (st0 == 1)
        mql = np.flatnonzero(hot | warm)
        ts = np.minimum(counts["last"][mql] + 300 * US, nxt - 1)
        self._status(mql, ts, "mql")
        self.status[mql] = 2
        self.hot[mql] = hot[mql]

        # recycling of disqualified leads and of leads whose deal was lost
        rec = np.flatnonzero(self.recycle_week[:n] == t)
        ts = mon + (rng.random(len(rec)) * 2 * DAY_US).astype(np.int64)
        self._status(rec, ts, "recycled")
        self._status(rec, ts + 3600 * US, "nurturing")
        self.status[rec] = 1
        self.recycle_week[rec] = -1

    def _deals(self, t: int) -> None:
        d = self.d
        rng = self.rng_deals
        mon = self.mondays_us[t]
        idx = np.flatnonzero((d["week"] < t) & (d["state"] < mdl.WON))
        if len(idx):
            old = d["state"][idx]
            g, qual = d["seg"][idx], d["quality"][idx]
            cum = self.step_cum[g, qual, self.kinds[t], old]
            new = (
                (rng.random(len(idx))[:, None] >= cum[:, : mdl.N_DEAL - 1])
                .sum(axis=1)
                .astype(np.int8)
            )
            won, lost = new == mdl.WON, new == mdl.LOST
            closed = won | lost
            old_stage = old // 2
            new_stage = np.where(won, 5, np.where(lost, 6, new // 2))
            stage_changed = new_stage != old_stage
            days = np.where(won, self.won_days[t], 5)
            ts = self._weekday_times(rng, len(idx), t, days)
            # amount: discount when entering negotiation
            amount = d["amount"][idx].copy()
            disc = (new_stage == 3) & (old_stage == 2) & (rng.random(len(idx)) < 0.5)
            amount[disc] = np.round(
                amount[disc] * np.exp(rng.normal(-0.07, 0.08, int(disc.sum()))), 2
            )
            # expected close date: pushed when overdue, re-estimated on some advances
            ecd = d["ecd"][idx].copy()
            mon_day = mon // DAY_US
            overdue = (ecd * DAY_US < mon) & ~closed & (rng.random(len(idx)) < 0.6)
            cold_push = ~closed & (new % 2 == 1) & (rng.random(len(idx)) < 0.04)
            push = overdue | cold_push
            ecd[push] = _month_end_days(
                np.maximum(ecd[push], mon_day) + rng.integers(14, 61, int(push.sum()))
            )
            advanced = ~closed & (new_stage > old_stage) & (rng.random(len(idx)) < 0.3)
            left = (
                (mdl.N_STAGES - new_stage[advanced])
                * TYPICAL_CYCLE_WEEKS[g[advanced]]
                / mdl.N_STAGES
            )
            est = mon_day + np.ceil(
                left * 7 * np.exp(rng.normal(-0.25, 0.3, int(advanced.sum())))
            ).astype(np.int64)
            ecd[advanced] = _month_end_days(est)
            ecd[won] = ts[won] // DAY_US
            d["pushed"][idx] |= (ecd > d["ecd"][idx]) & ~closed
            changed = stage_changed | (amount != d["amount"][idx]) | (ecd != d["ecd"][idx])
            self.opp_hist.add(
                opp=idx[changed].astype(np.int32),
                ts=ts[changed],
                stage=new_stage[changed].astype(np.int8),
                amount=amount[changed],
                ecd=ecd[changed] * DAY_US,
            )
            d["state"][idx], d["amount"][idx], d["ecd"][idx] = new, amount, ecd
            d["closed"][idx[closed]] = ts[closed]
            lo, hi = LOST_RECYCLE_WEEKS
            lost_leads = d["lead"][idx[lost]]
            self.recycle_week[lost_leads] = t + rng.integers(lo, hi, len(lost_leads))
            # field-sales touches: many on active deals, few on cold ones
            still = ~closed
            st, cold = new_stage[still], new[still] % 2 == 1
            owner, opp = d["owner"][idx[still]], idx[still].astype(np.int32)
            for name in ("call", "email", "meeting", "demo"):
                rate = self.season[t] * np.where(
                    cold, FS_RATES_COLD[name], FS_RATES_ACTIVE[name][np.minimum(st, 4)]
                )
                k = rng.poisson(rate)
                rep_i = np.repeat(np.arange(len(opp)), k)
                self.acts.add(
                    ts=self._weekday_times(rng, len(rep_i), t),
                    rep=owner[rep_i],
                    lead=np.full(len(rep_i), -1, np.int32),
                    opp=opp[rep_i],
                    type=np.full(len(rep_i), AT[name], np.int8),
                )
            cl = np.flatnonzero(closed)
            self.acts.add(
                ts=ts[cl] - 3600 * US,
                rep=d["owner"][idx[cl]],
                lead=np.full(len(cl), -1, np.int32),
                opp=idx[cl].astype(np.int32),
                type=np.where(won[cl], AT["meeting"], AT["call"]).astype(np.int8),
            )
        self._new_deals(t)

    def _new_deals(self, t: int, stage: np.ndarray | None = None) -> None:
        """Open a deal for every lead that became SQL in week t (at ``stage``, default
        follow_up); its weekly dynamics start in week t + 1."""
        lead, sql_ts = self.new_sql
        self.new_sql = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if not len(lead):
            return
        rng = self.rng_deals
        c = self.c
        n = len(lead)
        stage = np.zeros(n, np.int8) if stage is None else stage.astype(np.int8)
        left = (mdl.N_STAGES - stage) / mdl.N_STAGES
        g = c.lead_seg[lead]
        qcum = np.cumsum(mdl.QUALITY_GIVEN_FIT[c.lead_fit[lead]], axis=1)
        quality = (rng.random(n)[:, None] >= qcum[:, :3]).sum(axis=1).astype(np.int8)
        emp = c.acc_employees[c.lead_acc[lead]] / EMPLOYEES_MEDIAN[g]
        amount = np.round(
            mdl.AMOUNT_MEDIAN[g] * emp**0.25 * np.exp(rng.normal(0.0, mdl.AMOUNT_SIGMA[g])), -2
        )
        owner = (self.fs_offset[g] + np.floor(rng.random(n) * c.fs_reps[g])).astype(np.int32)
        created = sql_ts + 3600 * US
        ecd = _month_end_days(
            created // DAY_US
            + np.ceil(left * TYPICAL_CYCLE_WEEKS[g] * 7 * np.exp(rng.normal(-0.3, 0.35, n))).astype(
                np.int64
            )
        )
        first = len(self.d["lead"])
        new = {
            "lead": lead.astype(np.int32),
            "seg": g.astype(np.int8),
            "quality": quality,
            "state": (stage * 2).astype(np.int8),
            "week": np.full(n, t, np.int32),
            "owner": owner,
            "amount": amount,
            "ecd": ecd,
            "pushed": np.zeros(n, np.int8),
            "created": created,
            "closed": np.full(n, -1, np.int64),
        }
        for k, v in new.items():
            self.d[k] = np.concatenate([self.d[k], v])
        self.opp_hist.add(
            opp=np.arange(first, first + n, dtype=np.int32),
            ts=created,
            stage=stage,
            amount=amount,
            ecd=ecd * DAY_US,
        )

    def _new_leads(self, t: int) -> None:
        c = self.c
        a = self.n_active
        b = int(np.searchsorted(c.lead_week, t, side="right"))
        if b <= a:
            return
        rng = self.rng_market
        idx = np.arange(a, b)
        inbound = SOURCE_INBOUND[c.lead_source[idx]].astype(int)
        cum = np.cumsum(INITIAL_INTENT[inbound], axis=1)
        self.intent[idx] = (rng.random(len(idx))[:, None] >= cum[:, :3]).sum(axis=1)
        self.status[idx] = 1
        created = c.lead_created[idx]
        self._status(idx, created, "lead")
        self._status(idx, created + 3600 * US, "nurturing")
        first = np.array(SOURCE_FIRST_EVENT, np.int8)[c.lead_source[idx]]
        has = first >= 0
        self.events.add(
            lead=idx[has].astype(np.int32),
            ts=created[has],
            type=first[has],
            cat=np.full(int(has.sum()), -1, np.int8),
            campaign=np.full(int(has.sum()), -1, np.int32),
        )
        self.n_active = b
        if t == 0:
            self._import_pipeline(idx)

    def _import_pipeline(self, idx: np.ndarray) -> None:
        """Go-live import: some leads of the first week come with an open deal already
        in progress (the CRM's existing pipeline), so the first quarters are not empty.
        Their status runs lead -> nurturing -> mql -> sql within hours of creation."""
        c = self.c
        rng = self.rng_deals
        imported = idx[c.lead_source[idx] == SOURCES.index("list_import")]
        weight = (c.lead_fit[imported] + 1.0) ** 2
        k = min(len(imported), int(round(INITIAL_PIPELINE_SHARE * len(idx))))
        if not k:
            return
        pick = np.sort(rng.choice(imported, size=k, replace=False, p=weight / weight.sum()))
        created = c.lead_created[pick]
        self._status(pick, created + 2 * 3600 * US, "mql")
        self._status(pick, created + 3 * 3600 * US, "sql")
        self.status[pick] = 3
        self.new_sql = (pick, created + 3 * 3600 * US)
        stage = rng.choice(mdl.N_STAGES, size=k, p=INITIAL_STAGE_P)
        self._new_deals(0, stage)

    # ---------------------------------------------------------------- writing

    def _flush_events(self) -> None:
        if not len(self.events):
            return
        e = self.events.get()
        self.events.clear()
        order = np.argsort(e["ts"], kind="stable")
        folder = self.out / "events"
        folder.mkdir(exist_ok=True)
        camp = pa.array(self.names.campaigns or [""])
        write_table(
            {
                "lead_id": self.names.lead.take(pa.array(e["lead"][order])),
                "ts": ts_array(e["ts"][order]),
                "type": take_str(pa.array(EVENT_TYPES), e["type"][order]),
                "page_category": take_str(pa.array(mdl.PAGE_CATEGORIES), e["cat"][order]),
                "campaign_id": take_str(camp, e["campaign"][order]),
            },
            folder / f"part-{self.event_parts:05d}.parquet",
            **EVENT_PARQUET,
        )
        self.event_parts += 1
        self.event_rows += len(order)

    def _lead_truth_frame(self, b: dict[str, np.ndarray]) -> pa.Table:
        """Truth rows with the hidden state they were computed from (intent and the
        account's buying cycle at as_of), for analysis only."""
        ai = b["ai"].astype(np.int64)
        return pa.table(
            {
                "lead_id": self.names.lead.take(pa.array(b["lead"].astype(np.int64))),
                "as_of": ts_array(b["as_of"]),
                "p_opportunity_30d": pa.array(b["p"].astype(np.float64), pa.float64()),
                "intent": take_str(pa.array(mdl.INTENT_NAMES), ai % 4),
                "account_in_market": pa.array(ai >= 4, pa.bool_()),
            }
        )

    def _deal_truth_frame(self, b: dict[str, np.ndarray]) -> pa.Table:
        opp = b["opp"].astype(np.int64)
        names = pa.array(
            [f"O{i:07d}" for i in range(int(opp.max()) + 1 if len(opp) else 0)], pa.string()
        )
        return pa.table(
            {
                "opportunity_id": names.take(pa.array(opp)),
                "as_of": ts_array(b["as_of"]),
                "period_end": ts_array(b["period_end"]),
                "p_won_by": pa.array(b["p"].astype(np.float64), pa.float64()),
                "momentum": take_str(pa.array(["active", "cold"]), b["state"].astype(np.int64) % 2),
            }
        )

    def _flush_truth(self, final: bool = False) -> None:
        limit = 0 if final else 2_000_000
        (self.out / "truth").mkdir(exist_ok=True)
        if len(self.lead_truth_buf) > limit:
            tab = self._lead_truth_frame(self.lead_truth_buf.get())
            self.lead_truth_buf.clear()
            if self.lead_truth_writer is None:
                self.lead_truth_writer = pq.ParquetWriter(
                    self.out / "truth" / "lead_truth.parquet", tab.schema, compression="zstd"
                )
            self.lead_truth_writer.write_table(tab)
            self.lead_truth_rows += tab.num_rows
        if len(self.deal_truth_buf) > limit:
            tab = self._deal_truth_frame(self.deal_truth_buf.get())
            self.deal_truth_buf.clear()
            if self.deal_truth_writer is None:
                self.deal_truth_writer = pq.ParquetWriter(
                    self.out / "truth" / "deal_truth.parquet", tab.schema, compression="zstd"
                )
            self.deal_truth_writer.write_table(tab)
            self.deal_truth_rows += tab.num_rows
        if final:
            for wr in (self.lead_truth_writer, self.deal_truth_writer):
                if wr is not None:
                    wr.close()

    def write_tables(self) -> dict[str, int]:
        """Write every table but the events (already streamed); returns rows per table."""
        c, out, d = self.c, self.out, self.d
        lead_names, acc_names = self.names.lead, self.names.account
        rows: dict[str, int] = {}

        def put(name: str, cols: dict[str, pa.Array]) -> None:
            write_table(cols, out / f"{name}.parquet")
            rows[name] = len(next(iter(cols.values())))

        put(
            "accounts",
            {
                "account_id": acc_names,
                "industry": take_str(pa.array(INDUSTRIES), c.acc_industry),
                "employees": pa.array(c.acc_employees, pa.int64()),
                "country": take_str(pa.array(COUNTRIES), c.acc_country),
                "segment": take_str(pa.array(mdl.SEGMENTS), c.acc_seg),
                "created_at": ts_array(c.acc_created),
            },
        )
        put(
            "leads",
            {
                "lead_id": lead_names,
                "account_id": acc_names.take(pa.array(c.lead_acc)),
                "created_at": ts_array(c.lead_created),
                "source": take_str(pa.array(SOURCES), c.lead_source),
                "job_level": take_str(pa.array(JOB_LEVELS), c.lead_job),
                "department": take_str(pa.array(DEPARTMENTS), c.lead_dept),
            },
        )
        rows["events"] = self.event_rows
        s = self.status_rows.get()
        order = np.lexsort((s["status"], s["ts"], s["lead"]))
        put(
            "lead_status_history",
            {
                "lead_id": lead_names.take(pa.array(s["lead"][order].astype(np.int32))),
                "ts": ts_array(s["ts"][order]),
                "status": take_str(pa.array(LEAD_STATUSES), s["status"][order]),
            },
        )
        n_opp = len(d["lead"])
        opp_names = pa.array([f"O{i:07d}" for i in range(n_opp)], pa.string())
        rep_ids, rep_role, rep_team, rep_seg = [], [], [], []
        for role, counts in (("IS", c.is_reps), ("FS", c.fs_reps)):
            for g, k in enumerate(counts):
                for r in range(int(k)):
                    rep_ids.append(f"{role}-{SEG_SHORT[g]}-{r + 1:02d}")
                    rep_role.append(role)
                    rep_team.append(f"{role.lower()}_{mdl.SEGMENTS[g]}")
                    rep_seg.append(mdl.SEGMENTS[g])
        rep_names = pa.array(rep_ids)
        fs_base = self.n_is
        put(
            "opportunities",
            {
                "opportunity_id": opp_names,
                "account_id": acc_names.take(pa.array(c.lead_acc[d["lead"]])),
                "lead_id": lead_names.take(pa.array(d["lead"])),
                "owner_id": rep_names.take(pa.array(fs_base + d["owner"])),
                "created_at": ts_array(d["created"]),
                "amount": pa.array(self._initial_amounts(), pa.float64()),
                "segment": take_str(pa.array(mdl.SEGMENTS), d["seg"]),
            },
        )
        h = self.opp_hist.get()
        order = np.lexsort((h["stage"], h["ts"], h["opp"]))
        put(
            "opportunity_history",
            {
                "opportunity_id": opp_names.take(pa.array(h["opp"][order].astype(np.int32))),
                "ts": ts_array(h["ts"][order]),
                "stage": take_str(pa.array(STAGES), h["stage"][order]),
                "amount": pa.array(h["amount"][order].astype(np.float64)),
                "expected_close_date": ts_array(h["ecd"][order]),
            },
        )
        a = self.acts.get()
        order = np.lexsort((a["type"], a["rep"], a["ts"]))
        is_fs = a["opp"][order] >= 0
        put(
            "activities",
            {
                "ts": ts_array(a["ts"][order]),
                "rep_id": rep_names.take(pa.array(np.where(is_fs, fs_base, 0) + a["rep"][order])),
                "lead_id": take_str(lead_names, a["lead"][order]),
                "opportunity_id": take_str(opp_names, a["opp"][order]),
                "type": take_str(pa.array(ACTIVITY_TYPES), a["type"][order]),
            },
        )
        put(
            "reps",
            {
                "rep_id": rep_names,
                "role": pa.array(rep_role),
                "team": pa.array(rep_team),
                "segment": pa.array(rep_seg),
                "weekly_slots": pa.array([self.weekly_slots] * len(rep_ids), pa.int64()),
            },
        )
        put("targets", self._targets())
        return rows

    def _initial_amounts(self) -> np.ndarray:
        h = self.opp_hist.get()
        n = len(self.d["lead"])
        amount = np.zeros(n)
        order = np.lexsort((h["ts"], h["opp"]))
        opp, amt = h["opp"][order], h["amount"][order]
        keep = np.ones(len(opp), bool)
        keep[1:] = opp[1:] != opp[:-1]
        amount[opp[keep]] = amt[keep]
        return amount

    def _targets(self) -> dict[str, pa.Array]:
        """Quarterly bookings targets per field-sales team (one team per segment).

        A plan, not a forecast: 1.1 x the segment's average bookings over the
        quarter and its neighbours (rounded to 1,000), so that some quarters are
        missed and some beaten."""
        d = self.d
        q_lo = int(np.searchsorted(self.boundaries_us, self.mondays_us[0], side="right")) - 1
        q_hi = int(np.searchsorted(self.boundaries_us, self.end_us, side="left"))
        starts = self.boundaries_us[q_lo:q_hi]
        ends = self.boundaries_us[q_lo + 1 : q_hi + 1]
        won = d["state"] == mdl.WON
        quarter = np.searchsorted(starts, d["closed"][won], side="right") - 1
        booked = np.zeros((mdl.N_SEG, len(starts)))
        np.add.at(booked, (d["seg"][won], quarter), d["amount"][won])
        kernel = np.array([1.0, 1.0, 1.0])
        smooth = np.array(
            [
                np.convolve(b, kernel, "same") / np.convolve(np.ones_like(b), kernel, "same")
                for b in booked
            ]
        )
        target = np.maximum(1000.0, np.round(1.1 * smooth, -3))
        gg, kk = np.meshgrid(np.arange(mdl.N_SEG), np.arange(len(starts)), indexing="ij")
        g, k = gg.reshape(-1), kk.reshape(-1)
        return {
            "period_start": ts_array(starts[k]),
            "period_end": ts_array(ends[k]),
            "team": pa.array([f"fs_{mdl.SEGMENTS[x]}" for x in g]),
            "segment": take_str(pa.array(mdl.SEGMENTS), g),
            "amount": pa.array(target[g, k]),
        }

    def write_truth_extras(self, doc: str) -> dict[str, int]:
        """Close the truth files (empty ones if nothing was open) and write the hidden
        traits and the README; returns rows per truth file."""
        self._flush_truth(final=True)
        folder = self.out / "truth"
        if self.lead_truth_writer is None:
            pq.write_table(
                self._lead_truth_frame(self.lead_truth_buf.get()), folder / "lead_truth.parquet"
            )
        if self.deal_truth_writer is None:
            pq.write_table(
                self._deal_truth_frame(self.deal_truth_buf.get()), folder / "deal_truth.parquet"
            )
        c, d = self.c, self.d
        write_table(
            {
                "lead_id": self.names.lead,
                "fit": pa.array(c.lead_fit.astype(np.int64)),
                "engagement": pa.array(c.lead_eng.astype(np.int64)),
                "tier": pa.array(c.lead_tier.astype(np.int64)),
            },
            folder / "hidden.parquet",
        )
        write_table(
            {
                "opportunity_id": pa.array(
                    [f"O{i:07d}" for i in range(len(d["lead"]))], pa.string()
                ),
                "quality": pa.array(d["quality"].astype(np.int64)),
            },
            folder / "deal_hidden.parquet",
        )
        (folder / "README.md").write_text(
            TRUTH_README + "\n" + doc.strip() + "\n\n" + (mdl.__doc__ or "").strip() + "\n"
        )
        return {
            "lead_truth": self.lead_truth_rows,
            "deal_truth": self.deal_truth_rows,
            "hidden": c.n_leads,
            "deal_hidden": len(d["lead"]),
        }


TRUTH_README = """# Ground truth of the simulated company

Never read by feature or model code; evaluation compares models and forecasts with it.

- lead_truth.parquet: lead_id, as_of (Monday 00:00 UTC), p_opportunity_30d = exact
  P(lead becomes SQL / opportunity in (as_of, as_of + 30 days] | hidden state at as_of),
  for every lead open at as_of (created before it, status nurturing or mql), for the
  as-of Mondays whose 30-day window ends inside the simulated period.
- deal_truth.parquet: opportunity_id, as_of, period_end, p_won_by = exact
  P(deal closed_won at a time < period_end | hidden state at as_of) for every deal open
  at as_of, for the next four quarter boundaries after as_of and for as_of + 13 weeks
  (= won within 90 days, the deal-close model's headline horizon; one row when that
  is a quarter boundary).
- both also carry the hidden state at as_of the probability was computed from:
  lead intent (dormant / researching / evaluating / ready) and account_in_market;
  deal momentum (active / cold).
- hidden.parquet: per lead fit (0 poor .. 3 ideal), engagement (0 low .. 2 high),
  tier (1 = director and up); deal_hidden.parquet: per deal quality (0 .. 3).
"""
