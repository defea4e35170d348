"""Deterministic synthetic cohort generator: fake patients, dosing sessions and questionnaire scores.

Everything here is invented. Patient and provider identifiers are pseudonymous codes (``K00001``,
``PR01``); there are no names, birth dates, addresses or other personal details.

The same ``(n_patients, seed, as_of)`` always gives the same DataFrames and byte-identical CSV files.
Generation is vectorised with numpy (50,000 patients, about a million score rows, in seconds).

Timeline of one patient (days relative to the first dose, day 0):

* preparation: 1-3 assessments in days -21..0 (the last one on day 0 for about 30% of patients);
  about 8% of patients never start dosing and only have these;
* dosing: 4-8 sessions over 2-4 weeks (1-3 for those who stop early), a score at every other session
  and at the last one (roughly weekly), strictly after day 0 and on or before the last session;
* integration: a score about every two weeks, days 1..84 after the last session;
* follow-up: about 3 and 6 months after the last session (day > 84).

Enrolment is staggered up to ``as_of`` (a growing service) and nothing is dated after it, so on its last
day the cohort has patients in every current phase: preparation (baseline done, first dose still ahead —
up to three weeks after ``as_of`` — or never started), dosing, integration and follow-up. Few drop out
of integration, so most patients in it are not overdue for a questionnaire.

Trajectories are tuned to the naturalistic KAP literature: among PHQ-9 completers at the latest score,
about 54% respond (>= 50% reduction) and, of those with a baseline in the clinical range, about 29% remit
(McInnes et al. 2022: 53.6% / 28.9%). Most PHQ-9 baselines are moderate to severe (>= 10).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from kapdata import instruments as reg
from kapdata.ingest import COLUMNS

AS_OF_DEFAULT = datetime.date(2026, 11, 1)

# The data contract's columns (kapdata.ingest is where they are defined).
PATIENT_COLUMNS: tuple[str, ...] = COLUMNS["patients"]
SESSION_COLUMNS: tuple[str, ...] = COLUMNS["sessions"]
N_ITEM_COLUMNS = 20
ITEM_COLUMNS: tuple[str, ...] = tuple(f"item_{i}" for i in range(1, N_ITEM_COLUMNS + 1))
SCORE_COLUMNS: tuple[str, ...] = ("patient_id", "instrument", "assessed_on", "total", *ITEM_COLUMNS)

CLINICS: tuple[str, ...] = ("Northside", "Riverside", "Lakeside")
CLINIC_P: tuple[float, ...] = (0.45, 0.35, 0.20)
#: Providers are numbered clinic by clinic: Northside PR01-PR05, Riverside PR06-PR09, Lakeside PR10-PR12.
PROVIDERS_PER_CLINIC: tuple[int, ...] = (5, 4, 3)
#: Within a clinic, providers carry unequal case loads (the first weights are used, then renormalised).
PROVIDER_WEIGHTS: tuple[float, ...] = (0.30, 0.25, 0.20, 0.15, 0.10)
ROUTES: tuple[str, ...] = ("IV", "IM", "SL", "IN")
#: Route mix per clinic (order of ``ROUTES``): mostly IV; mostly SL/IM; mixed with intranasal.
ROUTE_P_BY_CLINIC: tuple[tuple[float, ...], ...] = (
    (0.75, 0.15, 0.05, 0.05),
    (0.08, 0.37, 0.50, 0.05),
    (0.30, 0.20, 0.20, 0.30),
)
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_P: tuple[float, ...] = (0.08, 0.26, 0.27, 0.21, 0.12, 0.06)
SEXES: tuple[str, ...] = ("female", "male", "other", "unknown")
SEX_P: tuple[float, ...] = (0.58, 0.40, 0.01, 0.01)
CONDITIONS: tuple[str, ...] = ("MDD", "PTSD", "GAD", "other")
CONDITION_P: tuple[float, ...] = (0.55, 0.22, 0.15, 0.08)
SIDE_EFFECTS: tuple[str, ...] = (
    "nausea",
    "vomiting",
    "dizziness",
    "headache",
    "hypertension",
    "anxiety",
    "sedation",
    "other",
)
#: Per-session probability of each side effect ("hypertension" is driven by the post-dose blood pressure).
SIDE_EFFECT_P: tuple[float, ...] = (0.09, 0.015, 0.07, 0.05, 0.0, 0.035, 0.06, 0.015)

# Trajectory types (index into TRAJECTORY_P).
EARLY, DELAYED, NON, WORSE = 0, 1, 2, 3
TRAJECTORY_NAMES: tuple[str, ...] = ("early responder", "delayed responder", "non-responder", "worsens")
TRAJECTORY_P: tuple[float, ...] = (0.50, 0.22, 0.23, 0.05)

#: Share of the baseline a responder loses by the end of dosing (early) or integration (delayed).
RESPONSE_DEPTH: tuple[float, float] = (0.50, 0.90)
EXTRA_DEPTH: tuple[float, float] = (0.0, 0.10)  # early responders' further gain during integration
NON_RESPONSE_DEPTH: tuple[float, float] = (-0.10, 0.25)
P_RELAPSE = 0.25  # responders who lose part of their gain in follow-up
RELAPSE_SIZE: tuple[float, float] = (0.05, 0.25)  # share of the baseline regained by 6 months

P_NO_DOSING = 0.08  # drop out before the first dose
P_BASELINE_ON_FIRST_DOSE = 0.30
MAX_SESSIONS = 8
PREP_SLOTS = 3
DOSING_SCORE_DAYS: tuple[int, ...] = (7, 14, 21)
INTEGRATION_DAYS: tuple[int, ...] = (14, 28, 42, 56, 70, 84)
FOLLOW_UP_DAYS: tuple[int, ...] = (91, 182)
INTEGRATION_WINDOW = 84
ENROLMENT_SPAN_DAYS = 730  # first doses spread over about two years before as_of
FUTURE_DOSE_DAYS = 21  # the newest patients are still in preparation: first dose up to 3 weeks after as_of
#: Post-dosing assessment slots attended (integration then follow-up) before dropping out: 0..8.
#: About two thirds complete integration (>= 6); fewer reach follow-up.
ATTENDED_P: tuple[float, ...] = (0.05, 0.04, 0.05, 0.05, 0.06, 0.08, 0.12, 0.15, 0.40)
P_MISSED_VISIT = 0.08  # an assessment skipped without dropping out
P_MISSED_INSTRUMENT = 0.04  # one questionnaire skipped at a visit that happened
P_PCL5_NON_PTSD = 0.10

_EPOCH = datetime.date(1970, 1, 1)
_ROW_CHUNK = 100_000


@dataclass(frozen=True)
class Cohort:
    """A synthetic cohort: one row per patient, per dosing session and per questionnaire.

    Dates are ``datetime64[s]`` columns (midnight); missing integers are ``pd.NA`` (nullable Int
    columns); a missing ``dose_mg_per_kg`` is NaN; a missing ``side_effects`` is NaN.
    """

    patients: pd.DataFrame
    sessions: pd.DataFrame
    scores: pd.DataFrame


@dataclass(frozen=True)
class _Scale:
    """Simulation parameters of one questionnaire (item structure comes from the registry)."""

    code: str
    n_items: int
    item_max: int
    reliable_change: int
    noise_sd: float  # measurement noise of the total, in points
    item_mean: tuple[float, ...]  # mean item propensity (relative endorsement), one per item

    @property
    def total_max(self) -> int:
        return self.n_items * self.item_max


def _scale(code: str, noise_sd: float, item_mean: tuple[float, ...]) -> _Scale:
    inst = reg.get(code)
    if len(item_mean) != inst.n_items:
        raise ValueError(f"{code}: {len(item_mean)} item propensities for {inst.n_items} items")
    return _Scale(inst.code, inst.n_items, inst.item_max, inst.reliable_change, noise_sd, item_mean)


PHQ9 = _scale("PHQ-9", 2.0, (0.3, 0.4, 0.5, 0.6, 0.0, 0.2, 0.1, -0.4, 0.0))  # item 9: see _item_profiles
GAD7 = _scale("GAD-7", 1.7, (0.4, 0.3, 0.5, 0.3, -0.2, 0.1, 0.0))
PCL5 = _scale(
    "PCL-5",
    5.0,
    (0.3, 0.1, -0.2, 0.4, 0.2, 0.3, 0.2, -0.3, 0.1, 0.0, 0.4, 0.1, 0.3, 0.2, 0.0, -0.8, 0.4, 0.2, 0.3, 0.4),
)
SCALES: tuple[_Scale, ...] = (PHQ9, GAD7, PCL5)


def _categorical(rng: np.random.Generator, p: tuple[float, ...], n: int) -> np.ndarray:
    """``n`` draws of an index into ``p`` (int64)."""
    return rng.choice(len(p), size=n, p=np.asarray(p) / np.sum(p))


def _categorical_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of the (n, k) probability matrix ``probs``."""
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    u = rng.random(probs.shape[0])
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def _patient_ids(n: int) -> np.ndarray:
    width = max(5, len(str(n)))
    return np.char.add("K", np.char.zfill(np.arange(1, n + 1).astype(str), width)).astype(object)


def _days_to_datetime(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[s]")


def _int_array(values: np.ndarray, valid: np.ndarray | None, dtype: str) -> pd.api.extensions.ExtensionArray:
    """A nullable pandas integer array from ``values`` (missing where ``valid`` is False)."""
    mask = np.zeros(values.shape, dtype=bool) if valid is None else ~valid
    return pd.arrays.IntegerArray(values.astype(dtype.lower()), mask)


def _allocate_items(
    rng: np.random.Generator, totals: np.ndarray, propensity: np.ndarray, item_max: int
) -> np.ndarray:
    """Split each total into items: (r,) totals and (r, n_items) propensities → (r, n_items) int8.

    Each item is ``item_max`` unit "slots"; slot ``l`` of item ``i`` gets the key
    ``propensity_i - l + noise`` and a row's ``total`` highest keys are switched on. An item's value is
    its number of slots switched on, so items respect their maximum and sum exactly to the total.
    """
    r, n_items = propensity.shape
    out = np.empty((r, n_items), dtype=np.int8)
    levels = np.arange(item_max, dtype=np.float64)
    n_slots = n_items * item_max
    for start in range(0, r, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, r)
        m = stop - start
        keys = propensity[start:stop, :, None] - levels[None, None, :]
        keys = keys + 0.35 * rng.standard_normal((m, n_items, item_max))
        flat = keys.reshape(m, n_slots)
        ordered = np.sort(flat, axis=1)
        t = totals[start:stop].astype(np.int64)
        pos = np.clip(n_slots - t, 0, n_slots - 1)
        threshold = np.take_along_axis(ordered, pos[:, None], axis=1)[:, 0]
        threshold = np.where(t <= 0, np.inf, threshold)
        out[start:stop] = (keys >= threshold[:, None, None]).sum(axis=2)
    return out


def _item_profiles(rng: np.random.Generator, scale: _Scale, n: int) -> np.ndarray:
    """Per-patient item propensities (n, n_items): a stable symptom profile."""
    prof = np.asarray(scale.item_mean)[None, :] + 0.6 * rng.standard_normal((n, scale.n_items))
    if scale is PHQ9:
        # Item 9 (thoughts of self-harm): a minority carries a real propensity; for the rest it is low
        # but finite, so it still gets endorsed when every other item is near its maximum.
        ideation = rng.random(n) < 0.12
        prof[:, 8] = np.where(ideation, -0.4, -3.4) + 0.5 * rng.standard_normal(n)
    return prof


def generate(n_patients: int, seed: int = 0, as_of: datetime.date = AS_OF_DEFAULT) -> Cohort:
    """A synthetic cohort of ``n_patients`` (deterministic in ``n_patients``, ``seed`` and ``as_of``)."""
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    n = int(n_patients)
    rng = np.random.default_rng(seed)
    rows = np.arange(n)

    # ---- patients -------------------------------------------------------------------------------
    clinic = _categorical(rng, CLINIC_P, n)
    n_prov = np.asarray(PROVIDERS_PER_CLINIC)
    prov_w = np.zeros((len(CLINICS), max(PROVIDERS_PER_CLINIC)))
    for c, k in enumerate(PROVIDERS_PER_CLINIC):
        prov_w[c, :k] = PROVIDER_WEIGHTS[:k]
    provider = (np.cumsum(n_prov) - n_prov)[clinic] + _categorical_rows(rng, prov_w[clinic])
    route = _categorical_rows(rng, np.asarray(ROUTE_P_BY_CLINIC)[clinic])
    age = _categorical(rng, AGE_P, n)
    sex = _categorical(rng, SEX_P, n)
    condition = _categorical(rng, CONDITION_P, n)
    ptsd = condition == CONDITIONS.index("PTSD")
    has_pcl = ptsd | (rng.random(n) < P_PCL5_NON_PTSD)

    pid = _patient_ids(n)
    provider_codes = np.array([f"PR{i:02d}" for i in range(1, int(n_prov.sum()) + 1)], dtype=object)
    patients = pd.DataFrame(
        {
            "patient_id": pid,
            "clinic": np.asarray(CLINICS, dtype=object)[clinic],
            "provider": provider_codes[provider],
            "age_band": np.asarray(AGE_BANDS, dtype=object)[age],
            "sex": np.asarray(SEXES, dtype=object)[sex],
            "primary_condition": np.asarray(CONDITIONS, dtype=object)[condition],
            "route": np.asarray(ROUTES, dtype=object)[route],
        },
        columns=list(PATIENT_COLUMNS),
    )

    # ---- timeline -------------------------------------------------------------------------------
    as_of_day = (as_of - _EPOCH).days
    # Assessment slots (days from the first dose): preparation, dosing, integration, follow-up.
    n_prep = _categorical(rng, (0.35, 0.40, 0.25), n) + 1
    prep_last = np.where(rng.random(n) < P_BASELINE_ON_FIRST_DOSE, 0, rng.integers(1, 8, n))
    prep_gaps = rng.integers(3, 8, (n, PREP_SLOTS - 1))
    prep_off = -(
        prep_last[:, None] + np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(prep_gaps, 1)], 1)
    )
    # More recent first doses are more frequent (a growing service). Enrolment runs up to as_of: the
    # newest patients' first dose is still ahead (up to FUTURE_DOSE_DAYS after as_of), but their first
    # preparation questionnaire is not, so everyone enrolled has a baseline on or before as_of.
    back = np.floor((ENROLMENT_SPAN_DAYS + FUTURE_DOSE_DAYS) * rng.random(n) ** 1.25).astype(np.int64)
    first_day = np.minimum(as_of_day + FUTURE_DOSE_DAYS - back, as_of_day - prep_off[rows, n_prep - 1])
    traj = _categorical(rng, TRAJECTORY_P, n)
    starts = rng.random(n) >= P_NO_DOSING
    planned_k = _categorical(rng, (0.10, 0.15, 0.45, 0.15, 0.15), n) + 4  # 4..8 sessions
    stop_p = np.where((traj == NON) | (traj == WORSE), 0.20, 0.07)
    stops_early = rng.random(n) < stop_p
    k = np.where(stops_early, rng.integers(1, 4, n), planned_k)  # sessions actually given (uncensored)
    span = np.maximum(rng.integers(12, 28, n), 2 * (planned_k - 1))  # first to planned last: 12..27 days
    step = span / (planned_k - 1)  # at least 2 days
    j = np.arange(MAX_SESSIONS)
    jitter = rng.random((n, MAX_SESSIONS)) * np.maximum(step - 2.0, 0.0)[:, None]
    jitter[(j[None, :] == 0) | (j[None, :] >= planned_k[:, None] - 1)] = 0.0
    # Gaps of at least two days: floor(j*step + u) with 0 <= u < step - 2 is strictly increasing.
    sess_off = np.floor((j[None, :] * span[:, None]) / (planned_k[:, None] - 1) + jitter).astype(np.int64)
    last_off = sess_off[rows, k - 1]  # last session (after stopping early); integration counts from here
    sess_valid = starts[:, None] & (j[None, :] < k[:, None]) & (first_day[:, None] + sess_off <= as_of_day)

    prep_valid = (np.arange(PREP_SLOTS)[None, :] < n_prep[:, None]) & (
        first_day[:, None] + prep_off <= as_of_day
    )

    # Dosing scores: at the first session on or after each weekly mark, and at the last session.
    given = j[None, :] < k[:, None]
    scored = np.zeros((n, MAX_SESSIONS), dtype=bool)
    for mark in DOSING_SCORE_DAYS:
        idx = ((sess_off < mark) & given).sum(axis=1)
        hit = idx < k
        scored[rows[hit], idx[hit]] = True
    scored[rows, k - 1] = True
    scored[:, 0] = False  # the first-dose day belongs to preparation
    dose_off = sess_off[:, 1:]
    dose_valid = sess_valid[:, 1:] & scored[:, 1:] & (rng.random((n, MAX_SESSIONS - 1)) >= P_MISSED_VISIT)

    post_days = np.asarray(INTEGRATION_DAYS + FOLLOW_UP_DAYS)
    n_int = len(INTEGRATION_DAYS)
    jit_hi = np.asarray([2] * n_int + [4, 7])
    post_day = post_days[None, :] + rng.integers(-jit_hi, jit_hi + 1, (n, len(post_days)))
    post_day[:, :n_int] = np.clip(post_day[:, :n_int], 1, INTEGRATION_WINDOW)
    attended = _categorical(rng, ATTENDED_P, n)
    attended = np.where(stops_early & (rng.random(n) < 0.5), 0, attended)
    post_off = last_off[:, None] + post_day
    post_valid = (
        starts[:, None]
        & (np.arange(len(post_days))[None, :] < attended[:, None])
        & (rng.random((n, len(post_days))) >= P_MISSED_VISIT)
        & (first_day[:, None] + post_off <= as_of_day)
    )

    # Course progress at each slot: pd = share of the planned dosing course received, pi = share of
    # the integration window elapsed, pf = share of the way from the end of integration to 6 months.
    zeros_prep = np.zeros((n, PREP_SLOTS))
    full_span = span.astype(np.float64)
    pd_post = np.broadcast_to((last_off / full_span)[:, None], post_day.shape)
    slot_off = np.concatenate([prep_off, dose_off, post_off], axis=1)
    slot_valid = np.concatenate([prep_valid, dose_valid, post_valid], axis=1)
    slot_pd = np.concatenate([zeros_prep, dose_off / full_span[:, None], pd_post], axis=1)
    slot_pi = np.concatenate(
        [zeros_prep, np.zeros(dose_off.shape), np.clip(post_day / INTEGRATION_WINDOW, 0.0, 1.0)], axis=1
    )
    slot_pf = np.concatenate(
        [zeros_prep, np.zeros(dose_off.shape), np.clip((post_day - INTEGRATION_WINDOW) / 98.0, 0.0, 1.0)],
        axis=1,
    )
    slot_prep = np.zeros(slot_off.shape, dtype=bool)
    slot_prep[:, :PREP_SLOTS] = True
    vp, vs = np.nonzero(slot_valid)  # row-major: patient, then slot
    v_off = slot_off[vp, vs]
    v_pd = np.clip(slot_pd[vp, vs], 0.0, 1.0)
    v_pi = slot_pi[vp, vs]
    v_pf = slot_pf[vp, vs]
    v_prep = slot_prep[vp, vs]

    # ---- trajectories ---------------------------------------------------------------------------
    # Multiplier of the baseline: 1 - cd*pd - ci*pi + cf*pf; worseners add points instead.
    r = rng.uniform(*RESPONSE_DEPTH, n)
    a = rng.uniform(0.0, 0.15, n)
    extra = rng.uniform(*EXTRA_DEPTH, n)
    r_non = rng.uniform(*NON_RESPONSE_DEPTH, n)
    relapse = np.where(rng.random(n) < P_RELAPSE, rng.uniform(*RELAPSE_SIZE, n), 0.0)
    cd = np.select([traj == EARLY, traj == DELAYED, traj == NON], [r, a, r_non / 2], 0.0)
    ci = np.select([traj == EARLY, traj == DELAYED, traj == NON], [extra, r - a, r_non / 2], 0.0)
    cf = np.where((traj == EARLY) | (traj == DELAYED), relapse, 0.0)
    worse_u = rng.uniform(1.2, 1.8, n)
    z = rng.standard_normal(n)  # shared severity

    blocks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for si, scale in enumerate(SCALES):
        if scale is PHQ9:
            base = 17.0 + 5.0 * z
        elif scale is GAD7:
            base = 14.0 + 5.0 * (0.65 * z + 0.76 * rng.standard_normal(n))
        else:
            e = 0.6 * z + 0.8 * rng.standard_normal(n)
            base = np.where(ptsd, 47.0 + 14.0 * e, 30.0 + 12.0 * e)
        rise = np.where(traj == WORSE, scale.reliable_change * worse_u, 0.0)
        base = np.clip(base, 0.0, scale.total_max - rise)
        own = np.clip(1.0 + 0.12 * rng.standard_normal(n), 0.6, 1.4)  # this scale's own response size
        has = np.ones(n, dtype=bool) if scale is not PCL5 else has_pcl
        keep = has[vp] & (v_prep | (rng.random(vp.size) >= P_MISSED_INSTRUMENT))
        p, off, pdv, piv, pfv = vp[keep], v_off[keep], v_pd[keep], v_pi[keep], v_pf[keep]
        mult = 1.0 - own[p] * (cd[p] * pdv + ci[p] * piv) + cf[p] * pfv
        true = base[p] * np.clip(mult, 0.0, None) + rise[p] * (0.5 * pdv + 0.5 * piv)
        total = np.clip(np.rint(true + scale.noise_sd * rng.standard_normal(p.size)), 0, scale.total_max)
        total = total.astype(np.int64)
        prof = _item_profiles(rng, scale, n)
        prop = prof[p] + 0.4 * rng.standard_normal((p.size, scale.n_items))
        items = np.full((p.size, N_ITEM_COLUMNS), -1, dtype=np.int8)
        items[:, : scale.n_items] = _allocate_items(rng, total, prop, scale.item_max)
        blocks.append((si, p, first_day[p] + off, total, items))

    # ---- scores table ---------------------------------------------------------------------------
    alpha_rank = {code: i for i, code in enumerate(sorted(s.code for s in SCALES))}
    s_p = np.concatenate([b[1] for b in blocks])
    s_day = np.concatenate([b[2] for b in blocks])
    s_total = np.concatenate([b[3] for b in blocks])
    s_items = np.concatenate([b[4] for b in blocks])
    s_inst = np.concatenate([np.full(b[1].size, alpha_rank[SCALES[b[0]].code]) for b in blocks])
    order = np.lexsort((s_inst, s_day, s_p))
    s_p, s_day, s_total, s_items, s_inst = (
        s_p[order],
        s_day[order],
        s_total[order],
        s_items[order],
        s_inst[order],
    )
    codes_alpha = np.asarray(sorted(s.code for s in SCALES), dtype=object)
    score_data: dict[str, object] = {
        "patient_id": pid[s_p],
        "instrument": codes_alpha[s_inst],
        "assessed_on": _days_to_datetime(s_day),
        "total": s_total.astype(np.int16),
    }
    for c, name in enumerate(ITEM_COLUMNS):
        col = s_items[:, c]
        score_data[name] = _int_array(col, col >= 0, "Int8")
    scores = pd.DataFrame(score_data, columns=list(SCORE_COLUMNS))

    # ---- sessions -------------------------------------------------------------------------------
    weight = rng.uniform(50.0, 110.0, n)
    titrate = np.cumsum(rng.random((n, MAX_SESSIONS)) < 0.5, axis=1) - 1
    titrate = np.maximum(titrate, 0)
    mgkg_start = 0.5 + 0.05 * rng.integers(0, 6, n)
    mgkg = np.clip(mgkg_start[:, None] + 0.05 * titrate, 0.5, 1.0)
    mgkg_h = np.rint(mgkg * 100.0).astype(np.int64)  # hundredths of mg/kg
    mg_kg_route = np.rint(mgkg_h / 100.0 * weight[:, None])
    sl = np.clip(
        (100 + 50 * rng.integers(0, 3, n))[:, None]
        + 50 * (np.cumsum(rng.random((n, MAX_SESSIONS)) < 0.3, 1)),
        100,
        300,
    )
    nasal = np.clip(
        (28 * (_categorical(rng, (0.15, 0.50, 0.35), n) + 1))[:, None]
        + 28 * (np.cumsum(rng.random((n, MAX_SESSIONS)) < 0.2, 1)),
        28,
        84,
    )
    by_kg = (route == ROUTES.index("IV")) | (route == ROUTES.index("IM"))
    is_sl = route == ROUTES.index("SL")
    dose_mg = np.where(by_kg[:, None], mg_kg_route, np.where(is_sl[:, None], sl, nasal)).astype(np.int64)
    dose_frac = np.where(by_kg[:, None], (mgkg - 0.5) / 0.5, np.where(is_sl[:, None], (sl - 100) / 200, 0.5))

    sys_pre = 125.0 + 9.0 * rng.standard_normal(n)[:, None] + 8.0 * rng.standard_normal((n, MAX_SESSIONS))
    dia_pre = 80.0 + 6.0 * rng.standard_normal(n)[:, None] + 5.3 * rng.standard_normal((n, MAX_SESSIONS))
    sys_pre = np.clip(np.rint(sys_pre), 90, 185).astype(np.int64)
    dia_pre = np.clip(np.rint(dia_pre), 50, 115).astype(np.int64)
    sys_post = sys_pre + rng.integers(5, 21, (n, MAX_SESSIONS))
    dia_post = dia_pre + rng.integers(1, 8, (n, MAX_SESSIONS))
    diss_mean = np.asarray([9.5, 8.0, 4.0, 5.0])[route]
    diss = (
        diss_mean[:, None]
        + 2.0 * dose_frac
        + 2.5 * rng.standard_normal(n)[:, None]
        + 2.5 * rng.standard_normal((n, MAX_SESSIONS))
    )
    diss = np.clip(np.rint(diss), 0, 24).astype(np.int64)
    bits = np.zeros((n, MAX_SESSIONS), dtype=np.int64)
    for b, p_se in enumerate(SIDE_EFFECT_P):
        if SIDE_EFFECTS[b] == "hypertension":
            high = (sys_post >= 160) | (dia_post >= 100)
            hit = high & (rng.random((n, MAX_SESSIONS)) < 0.8)
        else:
            hit = rng.random((n, MAX_SESSIONS)) < p_se
        bits |= hit.astype(np.int64) << b
    combos = np.empty(1 << len(SIDE_EFFECTS), dtype=object)
    for mask in range(1 << len(SIDE_EFFECTS)):
        combos[mask] = ";".join(t for b, t in enumerate(SIDE_EFFECTS) if mask >> b & 1) or None

    sp, sj = np.nonzero(sess_valid)  # patient, then session order: dates increase
    sess_mgkg = np.where(by_kg[sp], mgkg_h[sp, sj] / 100.0, np.nan)
    sessions = pd.DataFrame(
        {
            "patient_id": pid[sp],
            "session_date": _days_to_datetime(first_day[sp] + sess_off[sp, sj]),
            "route": np.asarray(ROUTES, dtype=object)[route[sp]],
            "dose_mg": dose_mg[sp, sj].astype(np.int16),
            "dose_mg_per_kg": sess_mgkg,
            "bp_sys_pre": sys_pre[sp, sj].astype(np.int16),
            "bp_dia_pre": dia_pre[sp, sj].astype(np.int16),
            "bp_sys_post": sys_post[sp, sj].astype(np.int16),
            "bp_dia_post": dia_post[sp, sj].astype(np.int16),
            "dissociation": diss[sp, sj].astype(np.int8),
            "side_effects": pd.array(combos[bits[sp, sj]], dtype="str"),
        },
        columns=list(SESSION_COLUMNS),
    )
    return Cohort(patients=patients, sessions=sessions, scores=scores)


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    """The table as written: dates as date32, ``dose_mg_per_kg`` as text with two decimals."""
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    for i, field in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, col.cast(pa.date32()))
        elif field.name == "dose_mg_per_kg":
            values = df[field.name].to_numpy(dtype=np.float64, na_value=np.nan)
            valid = ~np.isnan(values)
            hundredths = np.rint(np.where(valid, values, 0.0) * 100.0).astype(np.int64)
            whole = pa.array(hundredths // 100, mask=~valid).cast(pa.string())
            frac = pc.utf8_lpad(pa.array(hundredths % 100, mask=~valid).cast(pa.string()), 2, "0")
            table = table.set_column(i, field.name, pc.binary_join_element_wise(whole, frac, "."))
    return table


def write_cohort(cohort: Cohort, out_dir: str | Path) -> list[Path]:
    """Write ``patients.csv``, ``sessions.csv`` and ``scores.csv`` into ``out_dir`` (created if needed).

    Plain UTF-8 CSV: a header row, comma-separated, no quoting, an empty field for a missing value,
    dates as YYYY-MM-DD. Returns the three paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=65_536)
    paths: list[Path] = []
    for name, df in (("patients", cohort.patients), ("sessions", cohort.sessions), ("scores", cohort.scores)):
        path = out / f"{name}.csv"
        pacsv.write_csv(_to_arrow(df), path, write_options=options)
        paths.append(path)
    return paths


def write_sample(
    n_patients: int, out_dir: str | Path, seed: int = 0, as_of: datetime.date = AS_OF_DEFAULT
) -> list[Path]:
    """Generate a cohort and write its three CSV files; returns their paths."""
    return write_cohort(generate(n_patients, seed=seed, as_of=as_of), out_dir)
