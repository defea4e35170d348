"""What a clinician sees before a session: the caseload (ranked by need for attention) and one patient's view.

No clinical definition is written here a second time: phases and the per-score safety flag come from the
``scores_phased`` view, baseline / latest / change / response / remission / reliable change / recovery from
the ``outcomes`` view, thresholds and settings from the database (:mod:`kapdata.settings`, so the settings
page changes them here too), item facts from the registry, definitions in words from
:mod:`kapdata.definitions`. What this module adds is the patient's *current* state as of a day ("today",
injectable for tests):

- **Current phase**: no dosing session → preparation; last session within the last ``DOSING_ACTIVE_DAYS``
  days → dosing (still under way as far as the data shows); otherwise DESIGN §4 applied to today: up to the
  integration window after the last session → integration, later → follow-up.
- **Days in phase**: since the first questionnaire (preparation), the first session (dosing), the last
  session (integration), the end of the integration window (follow-up).
- **Flags**, in order of attention: safety (the view's safety flag at the latest questionnaire of a scale
  with safety items *that answered them*: PHQ-9 item 9 > 0; a PHQ-9 without an item-9 answer is unknown and
  never clears the flag), reliable deterioration at the latest score on any scale, overdue (in dosing or
  integration and no questionnaire for more than ``overdue_days``), no baseline (dosed without any
  preparation questionnaire). Then the rest. Within each group an unacknowledged flag comes before an
  acknowledged one (:mod:`kapdata.caseload`); within the safety group the highest item-9 answer first, then
  the most recent flagging questionnaire; otherwise the most recently assessed first. Discharged patients
  come after everyone else (the page hides them unless asked).

Everything is one SQL query: for the whole caseload (fast at 50,000 patients), and for one patient (the
patient view: every relation filtered on ``patient_id`` first, each view planned once).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from kapdata import access, cohort, phases
from kapdata import definitions as defs
from kapdata import instruments as reg
from kapdata.outcomes import BOOLEAN_COLUMNS
from kapdata.settings import GENERAL_BY_KEY, THRESHOLDS, Settings, defaults

#: A last session this recent means dosing is still under way (the phase rule's constant).
DOSING_ACTIVE_DAYS = phases.DOSING_ACTIVE_DAYS

#: Flags a clinician can acknowledge (``acknowledgements.flag``): both are raised by a score, so a newer score
#: that raises the flag again (dated after the acknowledged ``flag_on``) un-acknowledges it.
ACK_FLAGS: tuple[str, ...] = ("safety", "deterioration")

#: How the safety item reads to the patient (PHQ-9 item 9), for the clinician's text.
SAFETY_ITEM_WORDING = "thoughts that you would be better off dead, or of hurting yourself"

#: Flag columns of the caseload, in order of attention (``priority`` 1..4; 5 = no flag).
FLAGS: tuple[str, ...] = ("flag_safety", "flag_deterioration", "flag_overdue", "flag_no_baseline")

#: Per-scale columns of the caseload: ``<key>`` latest score, ``<key>_change`` change from baseline.
SCALE_KEYS: dict[str, str] = {i.code: i.key.lower() for i in reg.INSTRUMENTS}

#: Scales with safety items (PHQ-9 item 9), from the registry.
SAFETY_SCALES: tuple[reg.Instrument, ...] = tuple(i for i in reg.INSTRUMENTS if i.safety_items)


# --- SQL text built only from the registry's own constants (codes, item numbers, labels) -----------------


def _items_label(inst: reg.Instrument) -> str:
    """``item 9`` (or ``items 9, 10``)."""
    word = "item" if len(inst.safety_items) == 1 else "items"
    return f"{word} {', '.join(str(int(k)) for k in inst.safety_items)}"


def _safety_answer(inst: reg.Instrument, items: str) -> str:
    """SQL: the highest answer on a scale's safety items (for display; the flag itself is the view's)."""
    return "greatest(" + ", ".join(f"{items}[{int(k)}]" for k in inst.safety_items) + ")"


def _safety_answer_text(items: str, instrument: str, flag: str) -> str:
    """SQL: ``item 9 = 2`` for a score of a scale with safety items and item answers, ``item 9 not answered``
    when the safety flag is unknown (a total only, or no answer at item 9), else NULL (no safety items)."""
    cases = " ".join(
        f"WHEN '{i.code}' THEN CASE WHEN {flag} IS NULL THEN '{_items_label(i)} not answered' "
        f"ELSE '{_items_label(i)} = ' || {_safety_answer(i, items)} END"
        for i in SAFETY_SCALES
    )
    return f"CASE {instrument} {cases} END" if cases else "CAST(NULL AS VARCHAR)"


def _safety_sql() -> tuple[str, str, str, str, str]:
    """Per patient: the aggregates (at each safety scale's latest questionnaire whose safety flag is *known*,
    i.e. that answered the safety items: the view's flag, the answer and the date), the flag, its text
    ("PHQ-9 item 9 = 2"), the answer that raised it and the date of that questionnaire. A later total
    without item answers is unknown and never clears the flag."""
    aggs, flags, texts, answers, dates = [], [], [], [], []
    for n, inst in enumerate(SAFETY_SCALES):
        known = f"FILTER (WHERE instrument = '{inst.code}' AND safety_flag IS NOT NULL)"
        aggs.append(f"arg_max(safety_flag, assessed_at) {known} AS safety_{n}")
        aggs.append(f"arg_max({_safety_answer(inst, 'items')}, assessed_at) {known} AS answer_{n}")
        aggs.append(f"arg_max(assessed_on, assessed_at) {known} AS known_on_{n}")
        flags.append(f"coalesce(safety_{n}, false)")
        texts.append(f"CASE WHEN safety_{n} THEN '{inst.code} {_items_label(inst)} = ' || answer_{n} END")
        answers.append(f"CASE WHEN safety_{n} THEN answer_{n} END")
        dates.append(f"CASE WHEN safety_{n} THEN known_on_{n} END")
    if not aggs:
        null = "CAST(NULL AS VARCHAR)"
        return "", "false", null, "CAST(NULL AS INTEGER)", "CAST(NULL AS DATE)"
    return (
        ", " + ", ".join(aggs),
        " OR ".join(flags),
        f"nullif(concat_ws('; ', {', '.join(texts)}), '')",
        f"CAST(greatest({', '.join(answers)}) AS INTEGER)",
        f"greatest({', '.join(dates)})",
    )


def caseness_name(inst: reg.Instrument) -> str:
    """What the clinical range is called: "clinical range", or "probable PTSD" for the PCL-5."""
    return inst.caseness_label.split(" (")[0]


def _band_sql(instrument: str, total: str, caseness: str) -> str:
    """SQL: the severity band of a total (registry bands); for a scale without validated bands (PCL-5),
    its clinical-range name ("probable PTSD") at or above the cutoff in force, else "below threshold"."""
    cases = []
    for inst in reg.INSTRUMENTS:
        labels = [b.label for b in inst.bands] + [caseness_name(inst)]
        if any("'" in label for label in labels):
            raise ValueError(f"{inst.code}: a label with a quote cannot be written into SQL")
        for b in inst.bands:
            cases.append(
                f"WHEN {instrument} = '{inst.code}' AND {total} BETWEEN {int(b.low)} AND {int(b.high)} "
                f"THEN '{b.label}'"
            )
        if not inst.bands:
            cases.append(f"WHEN {instrument} = '{inst.code}' AND {total} >= {caseness} THEN '{labels[-1]}'")
            cases.append(f"WHEN {instrument} = '{inst.code}' AND {total} < {caseness} THEN 'below threshold'")
    return "CASE " + " ".join(cases) + " END"


def _scale_columns() -> str:
    parts = []
    for n, key in enumerate(SCALE_KEYS.values()):
        parts.append(f"max(latest) FILTER (WHERE instrument = $code_{n}) AS {key}")
        parts.append(f"max(change) FILTER (WHERE instrument = $code_{n}) AS {key}_change")
    return ",\n           ".join(parts)


_CURRENT_SQL = """
WITH cfg AS (
    SELECT CAST(max(value) FILTER (WHERE key = 'integration_window_days') AS INTEGER) AS window_days,
           CAST(max(value) FILTER (WHERE key = 'overdue_days') AS INTEGER) AS overdue_days
    FROM settings
),
{outcomes_cte}pat AS (
    SELECT patient_id, p.clinic, p.provider, p.route, p.primary_condition, p.age_band, p.sex,
           d.first_session, d.last_session, coalesce(d.n_sessions, 0) AS n_sessions
    FROM patients p LEFT JOIN patient_dosing d USING (patient_id)
    WHERE {where_patients}
),
scan AS (
    SELECT patient_id, min(assessed_on) AS first_score_on, max(assessed_on) AS last_score_on{safety_aggs}
    FROM {scores_source} WHERE {where_rows}
    GROUP BY patient_id
),
latest AS (
    SELECT patient_id, instrument, coalesce(endpoint, baseline) AS latest,
           coalesce(endpoint_on, baseline_on) AS latest_on, baseline, change, reliable_deterioration
    FROM {outcomes_source} WHERE phase = 'latest' AND {where_rows}
),
per_patient AS (
    SELECT patient_id, bool_or(baseline IS NOT NULL) AS has_baseline,
           bool_or(reliable_deterioration) AS deterioration,
           max(latest_on) FILTER (WHERE reliable_deterioration) AS deterioration_on,
           string_agg(instrument, ', ' ORDER BY list_position($codes, instrument))
               FILTER (WHERE reliable_deterioration) AS deteriorated_scales,
           {scale_columns}
    FROM latest GROUP BY patient_id
),
cur AS (
    SELECT pat.*, scan.first_score_on, scan.last_score_on, per_patient.* EXCLUDE (patient_id), cfg.*,
           {safety_flag} AS flag_safety, {safety_detail} AS safety_detail, {safety_item9} AS safety_item9,
           {safety_on} AS safety_on,
           CASE WHEN pat.first_session IS NULL OR pat.first_session > $today THEN 'preparation'
                WHEN $today - pat.last_session <= $dosing_days THEN 'dosing'
                WHEN $today - pat.last_session <= cfg.window_days THEN 'integration'
                ELSE 'follow-up' END AS phase
    FROM pat LEFT JOIN scan USING (patient_id) LEFT JOIN per_patient USING (patient_id) CROSS JOIN cfg
),
-- The latest acknowledgement of a flag still standing: acknowledged for the flag's questionnaire or a later
-- one (a newer score raising the flag again moves flag_on past it).
acks AS (
    SELECT a.patient_id, a.flag,
           arg_max(struct_pack(who := a.acknowledged_by, stamp := a.acknowledged_at, note := a.note),
                   a.acknowledged_at) AS ack
    FROM acknowledgements a JOIN cur c ON c.patient_id = a.patient_id
    WHERE (a.flag = 'safety' AND c.flag_safety AND a.flag_on >= c.safety_on)
       OR (a.flag = 'deterioration' AND c.deterioration AND a.flag_on >= c.deterioration_on)
    GROUP BY a.patient_id, a.flag
),
flagged AS (
    SELECT cur.*,
           sa.ack AS safety_ack, da.ack AS deterioration_ack,
           x.patient_id IS NOT NULL AS discharged, x.discharged_by, x.discharged_at, x.note AS discharge_note,
           CAST(CASE phase WHEN 'preparation' THEN $today - first_score_on
                           WHEN 'dosing' THEN $today - first_session
                           WHEN 'integration' THEN $today - last_session
                           ELSE $today - (last_session + window_days) END AS INTEGER) AS days_in_phase,
           CAST($today - last_score_on AS INTEGER) AS days_since_score,
           coalesce(deterioration, false) AS flag_deterioration,
           phase IN ('dosing', 'integration')
               AND (last_score_on IS NULL OR $today - last_score_on > overdue_days) AS flag_overdue,
           n_sessions > 0 AND NOT coalesce(has_baseline, false) AS flag_no_baseline
    FROM cur
    LEFT JOIN acks sa ON sa.patient_id = cur.patient_id AND sa.flag = 'safety'
    LEFT JOIN acks da ON da.patient_id = cur.patient_id AND da.flag = 'deterioration'
    LEFT JOIN discharges x ON x.patient_id = cur.patient_id
),
ranked AS (
    SELECT *,
           CASE WHEN flag_safety THEN 1 WHEN flag_deterioration THEN 2 WHEN flag_overdue THEN 3
                WHEN flag_no_baseline THEN 4 ELSE 5 END AS priority,
           safety_ack IS NOT NULL AS safety_acknowledged,
           deterioration_ack IS NOT NULL AS deterioration_acknowledged,
           CASE WHEN flag_deterioration THEN deterioration_on END AS deterioration_flag_on
    FROM flagged
),
acked AS (
    SELECT *,
           CASE priority WHEN 1 THEN safety_ack WHEN 2 THEN deterioration_ack END AS ack,
           CASE WHEN priority = 1 AND safety_ack IS NOT NULL THEN 'safety'
                WHEN priority = 2 AND deterioration_ack IS NOT NULL THEN 'deterioration' END AS ack_flag
    FROM ranked
)
SELECT patient_id, clinic, provider, route, primary_condition, age_band, sex,
       phase, days_in_phase, n_sessions, first_session, last_session, first_score_on, last_score_on,
       days_since_score, {scale_keys},
       flag_safety, flag_deterioration, flag_overdue, flag_no_baseline, safety_detail, deteriorated_scales,
       safety_item9, safety_on, deterioration_flag_on AS deterioration_on, priority,
       safety_acknowledged, deterioration_acknowledged, safety_ack, deterioration_ack,
       ack IS NOT NULL AS acknowledged, ack_flag,
       ack.who AS acknowledged_by, ack.stamp AS acknowledged_at, ack.note AS acknowledged_note,
       discharged, discharged_by, discharged_at, discharge_note,
       concat_ws(' · ',
           CASE WHEN flag_safety THEN '⚠ Safety: ' || safety_detail
                || CASE WHEN safety_acknowledged THEN ' (acknowledged by ' || safety_ack.who || ' '
                        || strftime(safety_ack.stamp, '%Y-%m-%d') || ')' ELSE '' END END,
           CASE WHEN flag_deterioration THEN '▲ Reliable deterioration: ' || deteriorated_scales
                || CASE WHEN deterioration_acknowledged
                        THEN ' (acknowledged by ' || deterioration_ack.who || ' '
                             || strftime(deterioration_ack.stamp, '%Y-%m-%d') || ')' ELSE '' END END,
           CASE WHEN flag_overdue THEN 'Overdue: ' || coalesce(days_since_score || ' days since last score',
                                                               'no score yet') END,
           CASE WHEN flag_no_baseline THEN 'No baseline' END,
           CASE WHEN discharged THEN 'Discharged ' || strftime(discharged_at, '%Y-%m-%d') END)
           AS flags{extra_columns}
FROM acked
ORDER BY discharged, priority, acknowledged,
         CASE WHEN priority = 1 THEN safety_item9 END DESC NULLS LAST,
         CASE WHEN priority = 1 THEN safety_on END DESC NULLS LAST,
         days_since_score NULLS LAST, patient_id
"""


def _struct(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': {sql}" for name, sql in fields.items()) + "}"


def _pcl5_fields() -> dict[str, str]:
    """PCL-5 cluster subscores, endorsed-item counts and the provisional DSM-5 rule (registry constants).
    ``s.endorsed`` holds the PCL-5's items as 1 (scored ≥ 2: endorsed) or 0; NULL for other scales."""
    fields, met = {}, []
    for name, items in reg.PCL5.subscales.items():  # "B": (1, ..., 5), ...
        numbers = "[" + ", ".join(str(int(k)) for k in items) + "]"
        fields[f"cluster_{name}"] = (
            f"CASE WHEN s.endorsed IS NOT NULL THEN list_sum(list_select(s.items, {numbers})) END"
        )
        fields[f"endorsed_{name}"] = f"list_sum(list_select(s.endorsed, {numbers}))"
        met.append(f"list_sum(list_select(s.endorsed, {numbers})) >= {int(reg.PCL5_DSM5_RULE[name])}")
    fields["dsm5_met"] = " AND ".join(met)
    return fields


_ENDORSED_SQL = (
    f"CASE WHEN s.instrument = '{reg.PCL5.code}' THEN "
    f"list_transform(s.items, lambda x: CAST(x >= {int(reg.PCL5_DSM5_ITEM_THRESHOLD)} AS INTEGER)) END"
)

#: One patient's rows of the ``outcomes`` view, with the latest score (the view's) and its severity band.
OUTCOME_FIELDS: dict[str, str] = {
    "instrument": "o.instrument",
    "phase": "o.phase",
    "baseline": "o.baseline",
    "baseline_on": "o.baseline_on",
    "endpoint": "o.endpoint",
    "endpoint_on": "o.endpoint_on",
    "latest": "coalesce(o.endpoint, o.baseline)",
    "latest_on": "coalesce(o.endpoint_on, o.baseline_on)",
    "baseline_prorated": "coalesce(o.baseline_prorated, false)",
    "endpoint_prorated": "coalesce(o.endpoint_prorated, false)",
    "latest_prorated": "coalesce(CASE WHEN o.endpoint IS NOT NULL THEN o.endpoint_prorated "
    "ELSE o.baseline_prorated END, false)",
    "baseline_clinical": "o.baseline_clinical",
    "caseness": "i.caseness",
    "band": _band_sql("o.instrument", "coalesce(o.endpoint, o.baseline)", "i.caseness"),
    "change": "o.change",
    "pct_change": "o.pct_change",
    "response": "o.response",
    "remission": "o.remission",
    "reliable_improvement": "o.reliable_improvement",
    "reliable_deterioration": "o.reliable_deterioration",
    "recovery": "o.recovery",
    "reliable_recovery": "o.reliable_recovery",
}
#: One patient's questionnaires: phase and safety flag (``scores_phased``), band, clinical range, clusters.
SCORE_FIELDS: dict[str, str] = {
    "instrument": "s.instrument",
    "assessed_on": "s.assessed_on",
    "assessed_at": "s.assessed_at",
    "total": "s.total",
    "prorated": "s.prorated",
    "items": "s.items",
    "phase": "s.phase",
    "phase_explicit": "s.phase_explicit",
    "day": "s.day",
    "band": _band_sql("s.instrument", "s.total", "s.caseness"),
    "clinical_range": "s.total >= s.caseness",
    "safety": "s.safety_flag",  # NULL: the safety item was not answered (unknown, not 0)
    "safety_answer": _safety_answer_text("s.items", "s.instrument", "s.safety_flag"),
} | _pcl5_fields()
_BP_OVER = (
    "coalesce(x.bp_sys_{when} > (SELECT value FROM settings WHERE key = 'bp_sys_threshold') "
    "OR x.bp_dia_{when} > (SELECT value FROM settings WHERE key = 'bp_dia_threshold'), false)"
)
#: One patient's dosing sessions; blood pressure over the thresholds in the settings is flagged.
SESSION_FIELDS: dict[str, str] = {
    "session_no": "CAST(row_number() OVER (ORDER BY x.session_date) AS INTEGER)",
    "session_date": "x.session_date",
    "route": "coalesce(x.route, (SELECT route FROM patients WHERE patient_id = $pid))",
    "dose_mg": "x.dose_mg",
    "dose_mg_per_kg": "x.dose_mg_per_kg",
    "dose": "coalesce(CASE WHEN x.dose_mg IS NULL THEN format('{:g} mg/kg', x.dose_mg_per_kg) "
    "ELSE concat_ws(' ', format('{:g} mg', x.dose_mg), format('({:g} mg/kg)', x.dose_mg_per_kg)) END, '–')",
    "bp_sys_pre": "x.bp_sys_pre",
    "bp_dia_pre": "x.bp_dia_pre",
    "bp_sys_post": "x.bp_sys_post",
    "bp_dia_post": "x.bp_dia_post",
    "bp_pre": "coalesce(x.bp_sys_pre || '/' || x.bp_dia_pre, '–')",
    "bp_post": "coalesce(x.bp_sys_post || '/' || x.bp_dia_post, '–')",
    "bp_high_pre": _BP_OVER.format(when="pre"),
    "bp_high_post": _BP_OVER.format(when="post"),
    "dissociation": "x.dissociation",
    "side_effects": "coalesce(replace(x.side_effects, ';', ', '), '')",
}
_SESSION_COLUMNS = ", ".join(f"{sql} AS {name}" for name, sql in SESSION_FIELDS.items())
THRESHOLD_KEYS: tuple[str, ...] = tuple(t.key for t in THRESHOLDS)

#: For one patient, everything the view shows comes back with the caseload row, in one query.
_ONE_PATIENT_EXTRA = f""",
       (SELECT list({_struct(OUTCOME_FIELDS)} ORDER BY list_position($codes, o.instrument), o.phase_order)
        FROM patient_outcomes o JOIN instruments i ON i.code = o.instrument) AS outcome_rows,
       (SELECT list({_struct(SCORE_FIELDS)} ORDER BY list_position($codes, s.instrument), s.assessed_at)
        FROM (SELECT s.*, i.caseness, {_ENDORSED_SQL} AS endorsed
              FROM patient_scores s JOIN instruments i ON i.code = s.instrument) s) AS score_rows,
       (SELECT list(r ORDER BY r.session_no)
        FROM (SELECT {_SESSION_COLUMNS} FROM sessions x WHERE x.patient_id = $pid) r) AS session_rows,
       (SELECT map(list(code), list({{{", ".join(f"'{k}': {k}" for k in THRESHOLD_KEYS)}}}))
        FROM instruments) AS thresholds,
       (SELECT map(list(key), list(value)) FROM settings) AS general"""


def _current_sql(where_patients: str, where_rows: str, *, one_patient: bool = False) -> str:
    aggs, flag, detail, item9, flag_on = _safety_sql()
    return _CURRENT_SQL.format(
        where_patients=where_patients,
        where_rows=where_rows,
        scale_columns=_scale_columns(),
        scale_keys=", ".join(f"{k}, {k}_change" for k in SCALE_KEYS.values()),
        safety_aggs=aggs,
        safety_flag=flag,
        safety_detail=detail,
        safety_item9=item9,
        safety_on=flag_on,
        outcomes_cte=(
            f"patient_outcomes AS (SELECT * FROM outcomes WHERE {where_rows}),\n"
            f"patient_scores AS (SELECT * FROM scores_phased WHERE {where_rows}),\n"
        )
        if one_patient
        else "",
        outcomes_source="patient_outcomes" if one_patient else "outcomes",
        scores_source="patient_scores" if one_patient else "scores_phased",
        extra_columns=_ONE_PATIENT_EXTRA if one_patient else "",
    )


#: The same query for everyone, for a filtered cohort, and for one patient (each filters as early as it can).
_EVERYONE_SQL = _current_sql("true", "true")
_COHORT_SQL = _current_sql(
    f"patient_id IN ({cohort.COHORT_SQL})", "patient_id IN (SELECT patient_id FROM pat)"
)
_ONE_PATIENT_SQL = _current_sql("patient_id = $pid", "patient_id = $pid", one_patient=True)
_ONE_STATUS_SQL = _current_sql("patient_id = $pid", "patient_id = $pid")


def _today(today: dt.date | None) -> dt.date:
    return today or dt.date.today()


def _params(today: dt.date | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "today": _today(today),
        "dosing_days": DOSING_ACTIVE_DAYS,
        "codes": list(SCALE_KEYS),
    }
    params.update({f"code_{n}": code for n, code in enumerate(SCALE_KEYS)})
    return params


def caseload(
    con: duckdb.DuckDBPyConnection, filt: cohort.CohortFilter | None = None, today: dt.date | None = None
) -> pd.DataFrame:
    """One row per patient of the filter, ranked by need for attention: ``priority`` 1 safety, 2 reliable
    deterioration, 3 overdue, 4 no baseline, 5 the rest. Within each group unacknowledged flags first; in
    the safety group the highest ``safety_item9`` answer, then the latest ``safety_on``; otherwise the most
    recently assessed first (patients without any questionnaire last). Discharged patients (``discharged``)
    come after all the others, ranked the same way. One query."""
    filt = filt or cohort.CohortFilter()
    if filt == cohort.CohortFilter():
        return con.execute(_EVERYONE_SQL, _params(today)).df()
    return con.execute(_COHORT_SQL, _params(today) | filt.params()).df()


def status(
    con: duckdb.DuckDBPyConnection, patient_id: str, today: dt.date | None = None
) -> dict[str, Any] | None:
    """One patient's caseload row (flags, their dates, acknowledgements, discharge), None if unknown."""
    cur = con.execute(_ONE_STATUS_SQL, _params(today) | {"pid": patient_id})
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def patient_ids(con: duckdb.DuckDBPyConnection, filt: cohort.CohortFilter | None = None) -> list[str]:
    """The patient IDs of the filter, sorted (cheap: for choosing a patient without the whole caseload)."""
    sql = "SELECT patient_id FROM (" + cohort.COHORT_SQL + ") ORDER BY patient_id"
    return [r[0] for r in con.execute(sql, (filt or cohort.CohortFilter()).params()).fetchall()]


# --- one patient -------------------------------------------------------------------------------------------


def response_target(baseline: Any, response_pct: int) -> int | None:
    """The highest (integer) score that is a response for this baseline, None without a baseline > 0: the
    largest integer e with (b − e) × 100 ≥ pct × b, the ``outcomes`` view's rule (baseline 19, 50% → 9)."""
    if baseline is None or _isna(baseline) or baseline <= 0:
        return None
    b = int(baseline)
    return b * (100 - int(response_pct)) // 100


#: Outcomes shown as badges, in order: (key, label).
OUTCOME_LABELS: tuple[tuple[str, str], ...] = (
    ("response", "Response"),
    ("remission", "Remission"),
    ("reliable_improvement", "Reliable improvement"),
    ("reliable_deterioration", "Reliable deterioration"),
    ("recovery", "Recovery"),
    ("reliable_recovery", "Reliable recovery"),
)
MET, NOT_MET = "met", "not met"
NO_BASELINE = "not defined: no baseline"
BELOW_RANGE = "not defined: baseline below clinical range"
NO_LATER_SCORE = "no outcome yet"


def outcome_states(outcome: dict[str, Any]) -> dict[str, str]:
    """Each outcome of an ``outcomes`` row as ``met``, ``not met`` or why it is not defined: no baseline;
    a baseline below the clinical range (remission, recovery and reliable recovery need one in range, and
    response a baseline above 0); or no score after the baseline yet. Never "not met" for an undefined one."""
    states = {}
    baseline, endpoint = outcome.get("baseline"), outcome.get("endpoint")
    for key, _ in OUTCOME_LABELS:
        value = outcome.get(key)
        if baseline is None or _isna(baseline):
            states[key] = NO_BASELINE
        elif value is not None and not _isna(value):
            states[key] = MET if value else NOT_MET
        elif endpoint is None or _isna(endpoint):
            states[key] = NO_LATER_SCORE
        else:
            states[key] = BELOW_RANGE
    return states


@dataclass(frozen=True)
class PatientView:
    """Everything the patient view and the progress report show (one query)."""

    patient_id: str
    today: dt.date
    status: dict[str, Any]  # the caseload row: attributes, phase, days_in_phase, sessions, flags
    scores: pd.DataFrame  # one row per questionnaire (SCORE_FIELDS)
    sessions: pd.DataFrame  # one row per dosing session (SESSION_FIELDS)
    outcomes: pd.DataFrame  # the outcomes view: scale x phase (dosing, integration, follow-up, latest)
    settings: Settings  # thresholds and settings in force

    @property
    def scales(self) -> list[str]:
        """The scales this patient has questionnaires on, in registry order."""
        present = set(self.scores["instrument"])
        return [code for code in reg.BY_CODE if code in present]

    def threshold(self, code: str, key: str) -> int:
        return self.settings.thresholds[code][key]

    def scale_scores(self, code: str) -> pd.DataFrame:
        return self.scores[self.scores["instrument"] == code].reset_index(drop=True)

    def latest_outcome(self, code: str) -> dict[str, Any]:
        """The ``outcomes`` row at the latest score of one scale (empty if the patient has none)."""
        rows = self.outcomes[(self.outcomes["instrument"] == code) & (self.outcomes["phase"] == "latest")]
        if rows.empty:
            return {}
        return {k: (None if _isna(v) else v) for k, v in rows.iloc[0].to_dict().items()}

    def pcl5(self) -> pd.DataFrame:
        """PCL-5 cluster subscores B/C/D/E and the provisional DSM-5 rule, one row per PCL-5 with items."""
        part = self.scale_scores(reg.PCL5.code).dropna(subset=["items"])
        cols = [c for c in part.columns if c.startswith(("cluster_", "endorsed_"))]
        return part[["assessed_on", "phase", "total", *cols, "dsm5_met"]].reset_index(drop=True)

    def phase_spans(self, end: dt.date) -> list[tuple[str, dt.date, dt.date]]:
        """(phase, start, end) of each phase from the dosing sessions (DESIGN §4), up to ``end``."""
        first, last = self.status["first_session"], self.status["last_session"]
        dates = [d for d in (self.status["first_score_on"], first) if d is not None]
        start = min(dates) if dates else end
        if first is None:
            return [("preparation", start, end)]
        window_end = last + dt.timedelta(days=self.settings.general["integration_window_days"])
        spans = [
            ("preparation", start, first),
            ("dosing", first, last),
            ("integration", last, min(window_end, end)),
            ("follow-up", window_end, end),
        ]
        return [(p, a, b) for p, a, b in spans if b > a or (p == "dosing" and b == a)]


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _settings(general: dict[str, float] | None, thresholds: dict[str, dict[str, int]] | None) -> Settings:
    """The settings in force from the rows of the one-patient query (defaults for anything missing)."""
    base = defaults()
    g = dict(base.general) | {k: int(v) for k, v in (general or {}).items() if k in GENERAL_BY_KEY}
    t = {code: dict(v) for code, v in base.thresholds.items()}
    for code, values in (thresholds or {}).items():
        if code in t:
            t[code] = {k: int(values[k]) for k in THRESHOLD_KEYS}
    return Settings(g, t)


def patient_view(
    con: duckdb.DuckDBPyConnection,
    patient_id: str,
    today: dt.date | None = None,
    principal: access.Principal | None = None,
) -> PatientView | None:
    """One patient's view (None if the patient is unknown): one query, filtered on ``patient_id`` first.
    With a ``principal``, a role without patient-level access or a patient outside its clinics raises
    ``access.NotPermitted`` before anything is read."""
    if principal is not None:
        access.check_patient(con, principal, patient_id)
    cur = con.execute(_ONE_PATIENT_SQL, _params(today) | {"pid": patient_id})
    row = cur.fetchone()
    if row is None:
        return None
    status = dict(zip([d[0] for d in cur.description], row, strict=True))
    return PatientView(
        patient_id=patient_id,
        today=_today(today),
        outcomes=pd.DataFrame(status.pop("outcome_rows") or [], columns=list(OUTCOME_FIELDS)),
        scores=pd.DataFrame(status.pop("score_rows") or [], columns=list(SCORE_FIELDS)),
        sessions=pd.DataFrame(status.pop("session_rows") or [], columns=list(SESSION_FIELDS)),
        settings=_settings(status.pop("general"), status.pop("thresholds")),
        status=status,
    )


# --- tables for display ------------------------------------------------------------------------------------

SUMMARY_COLUMNS: tuple[str, ...] = (
    "instrument",
    "baseline",
    "baseline_on",
    "latest",
    "latest_on",
    "endpoint",
    "baseline_prorated",
    "latest_prorated",
    "band",
    "change",
    "pct_change",
    *BOOLEAN_COLUMNS,
)
SESSION_LOG_COLUMNS: tuple[str, ...] = (
    "session_no",
    "session_date",
    "route",
    "dose",
    "bp_pre",
    "bp_post",
    "dissociation",
    "side_effects",
    "bp_high_pre",
    "bp_high_post",
)
ASSESSMENT_COLUMNS: tuple[str, ...] = (
    "assessed_on",
    "instrument",
    "total",
    "prorated",
    "band",
    "clinical_range",
    "phase",
    "day",
    "safety_answer",
    "safety",
)


def scale_summary(view: PatientView) -> pd.DataFrame:
    """One row per scale: baseline, latest, change, % change and the outcome flags at the latest score.
    Latest is the ``outcomes`` view's (the last score after baseline), else the baseline itself."""
    latest = view.outcomes[view.outcomes["phase"] == "latest"]
    return latest[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def session_log(view: PatientView) -> pd.DataFrame:
    """The dosing sessions for display: dose and blood pressure as text, with the high-BP flags."""
    return view.sessions[list(SESSION_LOG_COLUMNS)]


def assessment_table(view: PatientView) -> pd.DataFrame:
    """Every questionnaire, newest first, with its phase, severity band and safety answer."""
    return view.scores.sort_values("assessed_at", ascending=False)[list(ASSESSMENT_COLUMNS)].reset_index(
        drop=True
    )


def item_matrix(view: PatientView, code: str) -> pd.DataFrame:
    """Item answers of one scale: one row per item (1..N), one column per questionnaire with items."""
    part = view.scale_scores(code).dropna(subset=["items"])
    if part.empty:
        return pd.DataFrame()
    values = pd.DataFrame(part["items"].tolist(), index=part["assessed_on"]).T
    values.index = pd.RangeIndex(1, len(values) + 1, name="item")
    return values


# --- definitions, one hover away -------------------------------------------------------------------------


def explain(d: defs.Definition) -> str:
    """A definition as help text: the rule in words, its formula, its source."""
    text = f"{d.term}: {d.meaning}"
    if d.formula:
        text += f" Rule: {d.formula}."
    if d.source:
        text += f" Source: {d.source}"
    return text


def safety_help(settings: Settings) -> str:
    """The safety flag's rule as the caseload applies it (the item as it reads, unknown answers)."""
    d = {x.term: x for x in defs.flag_definitions(settings)}["Safety"]
    items = "; ".join(f"{i.code} {_items_label(i)}" for i in SAFETY_SCALES)
    return (
        f"Safety: {items} (“{SAFETY_ITEM_WORDING}”) answered above 0 at the latest questionnaire that "
        "answered it. A questionnaire without that answer (a total only) is unknown, not 0, and never clears "
        "the flag; only a later answer of 0 does. The flag asks the clinician to complete a risk assessment. "
        "Ranked first: the highest answer, then the most recent; an acknowledged flag after the "
        "unacknowledged ones until a newer questionnaire raises it again."
        + (f" Source: {d.source}" if d.source else "")
    )


def help_texts(settings: Settings) -> dict[str, str]:
    """Help text for every number and flag on the page, with the thresholds and settings in force. The
    clinical definitions are :mod:`kapdata.definitions`'; the caseload's own rules are stated here."""
    metric = {d.term: d for d in defs.metric_definitions(settings)}
    flag = {d.term: d for d in defs.flag_definitions(settings)}
    g = settings.general
    window = g["integration_window_days"]
    phases = " ".join(f"{d.term}: {d.meaning}" for d in defs.phase_rules(settings))
    bands = "; ".join(
        f"{i.code}: " + (", ".join(f"{b.low}–{b.high} {b.label}" for b in i.bands) or "none validated")
        for i in reg.INSTRUMENTS
    )
    return {
        "phase": (
            f"Current phase as of today: no dosing session yet → preparation; last session within the last "
            f"{DOSING_ACTIVE_DAYS} days → dosing (still under way as far as the data shows); up to {window} "
            "days after the last session (the integration window, a setting) → integration; later → "
            "follow-up."
        ),
        "days_in_phase": (
            "Days since the current phase began: the first questionnaire (preparation), the first dosing "
            f"session (dosing), the last session (integration), the end of the {window}-day integration "
            "window (follow-up)."
        ),
        "score_phase": f"Phase of each questionnaire (DESIGN §4). {phases}",
        "sessions": "Dosing sessions recorded so far.",
        "baseline": explain(metric["Baseline"]),
        "latest": explain(metric["Latest"]) + " Before any later score, the baseline itself is shown.",
        "change": explain(metric["Change"]),
        "pct_change": explain(metric["% change"]),
        "response": explain(metric["Response"]),
        "remission": explain(metric["Remission"]),
        "reliable_improvement": explain(metric["Reliable improvement"]),
        "reliable_deterioration": explain(metric["Reliable deterioration"]),
        "recovery": explain(metric["Recovery"]),
        "reliable_recovery": explain(metric["Reliable recovery"]),
        "caseness": explain(metric["Clinical range (caseness)"]),
        "band": f"Severity band of the total. {bands}.",
        "safety": safety_help(settings),
        "deterioration": explain(flag["Reliable deterioration"]),
        "overdue": explain(flag["Overdue assessment"]),
        "bp": explain(flag["Blood pressure"]),
        "no_baseline": "No baseline: dosing started without any preparation questionnaire, so no change can "
        "be computed.",
        "flags": (
            "Ranked by need for attention: safety first, then reliable deterioration, overdue, no baseline, "
            "then the rest. Within each group unacknowledged flags come first; safety by the item answer "
            "(highest first), then the most recent; otherwise the most recently assessed first. Discharged "
            "patients are hidden unless shown, and then come last."
        ),
        "acknowledge": (
            "Acknowledging records who saw the flag, when, and a note. The patient keeps the flag, marked "
            "acknowledged, and ranks after the unacknowledged flags of the same kind; a newer questionnaire "
            "that raises the flag again removes the acknowledgement."
        ),
        "discharge": (
            "A discharged patient leaves the caseload (shown with “Show discharged”) and stays in every "
            "outcome and export. Re-admitting undoes it."
        ),
        "prorated": "Prorated: the total was computed from the answered items (some items missing), scaled "
        "to the full scale.",
        "dissociation": "Dissociation after the dose: CADSS-6 total, 0–24 (higher is more dissociation).",
        "dsm5": explain(defs.pcl5_diagnosis()),
    }
