"""Aggregate outcomes for clinic directors (DESIGN §5): completers and intention-to-treat.

- Completers at a phase: patients with a baseline and a score in that phase.
- Intention-to-treat (ITT): every patient with a baseline who had at least one dosing session and is due for
  that endpoint on the data's last day (``outcomes.itt_due``); a missing endpoint carries the last observation
  forward (baseline included: no data counts as no response).
- Remission, recovery and reliable recovery count only patients whose baseline is in the clinical range (the
  ``outcomes`` rows leave them undefined otherwise); the joint NHS Talking Therapies recovery needs a baseline
  and an endpoint on PHQ-9 and GAD-7.
Rates carry k, n and a Wilson 95% interval; means a 95% t-interval.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from kapdata import db, phases, stats
from kapdata import instruments as reg
from kapdata.outcomes import BOOLEAN_COLUMNS

if TYPE_CHECKING:  # pandas is imported by the functions that build frames (the export imports this module)
    import pandas as pd

#: The per-patient outcome flags, as rates (the outcomes file's boolean columns).
RATE_NAMES: tuple[str, ...] = BOOLEAN_COLUMNS


@dataclass(frozen=True)
class CohortFilter:
    """Which patients are in the cohort. Empty lists mean "all".

    Lists given for the value fields are stored as tuples, so a filter is hashable (a cache key) and two
    filters with the same values are equal however they were built.
    """

    start_from: dt.date | None = None  # first dosing session on or after
    start_to: dt.date | None = None  # first dosing session on or before
    clinics: Sequence[str] = field(default_factory=tuple)
    providers: Sequence[str] = field(default_factory=tuple)
    routes: Sequence[str] = field(default_factory=tuple)
    conditions: Sequence[str] = field(default_factory=tuple)
    #: The clinics the person asking may see (``access.scoped``); None: every clinic. Unlike ``clinics`` (a
    #: choice, empty meaning all), an empty scope means no clinic at all.
    scope: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("clinics", "providers", "routes", "conditions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.scope is not None:
            object.__setattr__(self, "scope", tuple(self.scope))

    def params(self) -> dict[str, Any]:
        return {
            "start_from": self.start_from,
            "start_to": self.start_to,
            "clinics": list(self.clinics),
            "providers": list(self.providers),
            "routes": list(self.routes),
            "conditions": list(self.conditions),
            "scope_all": self.scope is None,
            "scope": list(self.scope or ()),
        }


#: The cohort's conditions on ``patients p LEFT JOIN patient_dosing d``; parameters from
#: ``CohortFilter.params()``.
COHORT_WHERE = """
    WHERE (CAST($start_from AS DATE) IS NULL OR d.first_session >= $start_from)
      AND (CAST($start_to AS DATE) IS NULL OR d.first_session <= $start_to)
      AND (len($clinics) = 0 OR list_contains($clinics, p.clinic))
      AND (len($providers) = 0 OR list_contains($providers, p.provider))
      AND (len($routes) = 0 OR list_contains($routes, p.route))
      AND (len($conditions) = 0 OR list_contains($conditions, p.primary_condition))
      AND ($scope_all OR coalesce(list_contains(CAST($scope AS VARCHAR[]), p.clinic), false))
"""
_COHORT_FROM = "\n    FROM patients p LEFT JOIN patient_dosing d USING (patient_id)"

#: SQL selecting the patient_ids in the cohort; parameters from ``CohortFilter.params()``.
COHORT_SQL = "\n    SELECT p.patient_id" + _COHORT_FROM + COHORT_WHERE


def _agg(source: str, prefix: str) -> str:
    """Means and rate counts of one group (completers or ITT), columns prefixed."""
    rates = ", ".join(f"count({r}) AS {prefix}{r}_n, count_if({r}) AS {prefix}{r}_k" for r in RATE_NAMES)
    return (
        f"SELECT instrument, phase, count(*) AS {prefix}n, avg(baseline) AS {prefix}mean_baseline, "
        f"avg(endpoint) AS {prefix}mean_endpoint, avg(change) AS {prefix}mean_change, "
        f"stddev_samp(change) AS {prefix}sd_change, {rates} FROM {source} GROUP BY instrument, phase"
    )


_SUMMARY_SQL = f"""
    WITH cohort AS ({COHORT_SQL}),
    o AS (
        SELECT o.*, d.n_sessions IS NOT NULL AS dosed
        FROM outcomes o JOIN cohort USING (patient_id) LEFT JOIN patient_dosing d USING (patient_id)
        WHERE o.baseline IS NOT NULL
    ),
    itt_flags AS (
        SELECT instrument, phase, phase_order, baseline, locf_endpoint AS endpoint, itt_change AS change,
               itt_flags.*
        FROM o WHERE itt_due
    ),
    completers AS (SELECT * FROM o WHERE endpoint IS NOT NULL),
    agg_c AS ({_agg("completers", "c_")}),
    agg_i AS ({_agg("itt_flags", "i_")}),
    base AS (
        SELECT instrument, phase, phase_order, count(*) AS with_baseline,
               count(*) FILTER (WHERE NOT baseline_clinical) AS below_caseness,
               count(*) FILTER (WHERE dosed AND NOT itt_due) AS itt_not_yet_due
        FROM o GROUP BY ALL
    )
    SELECT b.instrument, b.phase, b.phase_order, b.with_baseline, b.below_caseness, b.itt_not_yet_due,
           c.* EXCLUDE (instrument, phase), i.* EXCLUDE (instrument, phase)
    FROM base b
    LEFT JOIN agg_c c USING (instrument, phase)
    LEFT JOIN agg_i i USING (instrument, phase)
    ORDER BY b.instrument, b.phase_order
"""


def _group(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    n = int(row.get(f"{prefix}n") or 0)
    return {
        "n": n,
        "mean_baseline": row.get(f"{prefix}mean_baseline"),
        "mean_endpoint": row.get(f"{prefix}mean_endpoint"),
        "mean_change": stats.t_interval(
            n, row.get(f"{prefix}mean_change"), row.get(f"{prefix}sd_change")
        ).as_dict(),
        "rates": {
            r: stats.wilson(
                int(row.get(f"{prefix}{r}_k") or 0), int(row.get(f"{prefix}{r}_n") or 0)
            ).as_dict()
            for r in RATE_NAMES
        },
    }


def summary(con: duckdb.DuckDBPyConnection, cohort: CohortFilter | None = None) -> list[dict[str, Any]]:
    """Per instrument × endpoint phase: completers and ITT means and rates with 95% intervals."""
    params = (cohort or CohortFilter()).params()
    cur = con.execute(_SUMMARY_SQL, params)
    names = [d[0] for d in cur.description]
    out: list[dict[str, Any]] = []
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        c = _group(row, "c_")
        i = _group(row, "i_")
        head = row
        out.append(
            {
                "instrument": head["instrument"],
                "phase": head["phase"],
                "patients_with_baseline": int(head["with_baseline"]),
                "completers": c["n"],
                "itt": i["n"],
                "baseline_below_caseness": int(head["below_caseness"]),
                "itt_not_yet_due": int(head["itt_not_yet_due"]),
                "mean_baseline": c["mean_baseline"],
                "mean_endpoint": c["mean_endpoint"],
                "mean_change": c["mean_change"],
                "rates": {"completers": c["rates"], "itt": i["rates"]},
                "itt_means": {
                    "mean_baseline": i["mean_baseline"],
                    "mean_endpoint": i["mean_endpoint"],
                    "mean_change": i["mean_change"],
                },
            }
        )
    return out


def summary_document(con: duckdb.DuckDBPyConnection, cohort: CohortFilter | None = None) -> dict[str, Any]:
    """The ``summary --json`` document: results plus the definitions in force."""
    settings = db.get_settings(con)
    # Plain Python values (not a DataFrame's numpy arrays), so the document serialises as JSON as is.
    cur = con.execute("SELECT * FROM instruments ORDER BY code")
    names = [d[0] for d in cur.description]
    thresholds = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return {
        "generated_at": dt.datetime.now().isoformat(timespec="seconds"),
        "phases": list(db.ENDPOINT_PHASES),
        "definitions": {
            "completers": "patients with a baseline and a score in that phase",
            "itt": "patients with a baseline and at least one dosing session who are due for the endpoint on "
            "the data's last day (dosing and latest: dosed; integration: no session in the last "
            f"{phases.DOSING_ACTIVE_DAYS} days; follow-up: the integration window after the last session has "
            "passed); missing endpoint carried forward from the last observation, baseline included",
            "remission_recovery": "only patients whose baseline is in the clinical range "
            "(total >= caseness); others are left out (baseline_below_caseness)",
            "joint_recovery": "NHS Talking Therapies: a case on PHQ-9 or GAD-7 at baseline, neither at the "
            "endpoint; needs a baseline (and, for completers, an endpoint) on both",
            "rate_interval": "Wilson 95% score interval",
            "mean_interval": "95% Student-t interval",
            "settings": settings,
            "instruments": thresholds,
        },
        "results": summary(con, cohort),
        "joint_recovery": joint_recovery(con, cohort),
    }


def joint_sql(source: str) -> str:
    """Joint NHS Talking Therapies recovery per population × endpoint phase, from an outcomes table
    (``outcomes`` or the report's ``cohort_outcomes``): among patients with a baseline on every scale of
    ``$joint_scales`` and a case on at least one of them (total ≥ caseness), the share with no case on any at
    the endpoint. Completers need an endpoint on every scale; ITT patients are due (``itt_due``) on every
    scale and take the carried-forward endpoints. ``source`` is one of our table names, never user text."""
    if source not in ("outcomes", "cohort_outcomes"):
        raise ValueError(f"joint recovery reads outcomes or cohort_outcomes, not {source!r}")
    cohort_join = "SEMI JOIN (" + COHORT_SQL + ") c USING (patient_id)" if source == "outcomes" else ""
    return f"""
    WITH j AS (
        SELECT o.patient_id, o.phase, any_value(o.phase_order) AS phase_order, count(*) AS scales,
               count(o.baseline) AS with_baseline, count(o.endpoint) AS with_endpoint,
               bool_and(o.itt_due) AS due,
               bool_or(o.baseline >= i.caseness) AS case_at_baseline,
               bool_or(o.endpoint >= i.caseness) AS case_at_endpoint,
               bool_or(o.locf_endpoint >= i.caseness) AS case_at_locf
        FROM {source} o JOIN instruments i ON i.code = o.instrument {cohort_join}
        WHERE list_contains($joint_scales, o.instrument)
        GROUP BY o.patient_id, o.phase
    ),
    eligible AS (SELECT * FROM j WHERE scales = len($joint_scales) AND with_baseline = scales
                 AND case_at_baseline)
    SELECT 'completers' AS population, phase, any_value(phase_order) AS phase_order,
           count(*) FILTER (WHERE NOT case_at_endpoint) AS k, count(*) AS n
    FROM eligible WHERE with_endpoint = scales GROUP BY phase
    UNION ALL
    SELECT 'itt', phase, any_value(phase_order), count(*) FILTER (WHERE NOT case_at_locf), count(*)
    FROM eligible WHERE due GROUP BY phase
    ORDER BY population, phase_order
    """


def _joint_params(scales: Sequence[str]) -> list[str]:
    """The joint measure's scales, when all of them are among ``scales``; else none."""
    joint = list(reg.JOINT_RECOVERY_SCALES)
    return joint if all(code in scales for code in joint) else []


def joint_recovery(
    con: duckdb.DuckDBPyConnection, cohort: CohortFilter | None = None
) -> list[dict[str, Any]]:
    """The joint NHS recovery rate per endpoint phase, completers and ITT, each ``{k, n, rate, ci_low,
    ci_high}`` (Wilson 95%)."""
    params = {**(cohort or CohortFilter()).params(), "joint_scales": list(reg.JOINT_RECOVERY_SCALES)}
    rows = {(p, ph): (k, n) for p, ph, _, k, n in con.execute(joint_sql("outcomes"), params).fetchall()}
    return [
        {
            "phase": phase,
            "scales": list(reg.JOINT_RECOVERY_SCALES),
            **{
                pop: stats.wilson(*[int(x) for x in rows.get((pop, phase), (0, 0))]).as_dict()
                for pop in POPULATIONS
            },
        }
        for phase in db.ENDPOINT_PHASES
    ]


# --- The clinic outcomes page (director view) ------------------------------------------------------------
#
# :func:`report` computes every panel of the page for one cohort, set of scales, endpoint and breakdown,
# for both populations (completers and ITT, so the page's toggle needs no query). It reads the ``outcomes``
# view once, into a temporary table of its short-lived connection, and every panel aggregates from there;
# the per-patient rules all come from the view (``kap_outcome_flags``), thresholds from the ``instruments``
# and ``settings`` tables, severity bands from the registry.

#: Breakdown dimensions: the page's name → the patients column (a fixed whitelist; only these reach SQL).
DIMENSIONS: dict[str, str] = {
    "clinic": "clinic",
    "provider": "provider",
    "route": "route",
    "condition": "primary_condition",
}
DIMENSION_LABELS: dict[str, str] = {
    "clinic": "Clinic",
    "provider": "Provider",
    "route": "Route",
    "condition": "Primary condition",
}
#: A patient attribute that was never given (a patient created from a sessions or scores file).
UNKNOWN = "(unknown)"
POPULATIONS: tuple[str, ...] = ("completers", "itt")
POPULATION_LABELS: dict[str, str] = {"completers": "Completers", "itt": "Intention-to-treat"}
POPULATION_HELP: dict[str, str] = {
    "completers": "Completers: patients with a baseline and a score at the endpoint.",
    "itt": "Intention-to-treat: every patient with a baseline who had at least one dosing session and is "
    "due for the endpoint on the data's last day (end of dosing and latest: dosed; end of integration: no "
    f"session in the last {phases.DOSING_ACTIVE_DAYS} days; follow-up: the integration window after the "
    "last session has passed); a missing endpoint carries the last observation forward (baseline included, "
    "so no data counts as no response).",
}
#: Rows of the phase table: the baseline, then the endpoint phases of the ``outcomes`` view.
TABLE_PHASES: tuple[str, ...] = ("baseline", *db.ENDPOINT_PHASES)
PHASE_LABELS: dict[str, str] = {
    "baseline": "Baseline",
    "dosing": "End of dosing",
    "integration": "End of integration",
    "follow-up": "Follow-up",
    "latest": "Latest",
}
RATE_LABELS: dict[str, str] = {
    "response": "Response",
    "remission": "Remission",
    "reliable_improvement": "Reliable improvement",
    "reliable_deterioration": "Reliable deterioration",
    "recovery": "Recovery",
    "reliable_recovery": "Reliable recovery",
}
#: The weekly trajectory runs from week 0 (baseline) to this many weeks after the first dose.
TRAJECTORY_MAX_WEEK = 30
#: Above this many patients a waterfall bar stands for an equal share of them (their mean % change).
WATERFALL_MAX_BARS = 300
WATERFALL_CATEGORIES: tuple[str, ...] = ("remission", "response", "no response", "reliable deterioration")
FUNNEL_STAGES: dict[str, str] = {
    "enrolled": "Enrolled",
    "baseline": "Baseline questionnaire",
    "first_dose": "First dose",
    "dosing_complete": "Dosing complete (≥ {sessions} sessions)",
    "integration": "Reached integration",
    "follow_up": "Reached follow-up",
}
#: What each stage means, and when a patient who has not reached it is lost rather than not yet due (on the
#: data's last day). ``{sessions}``: the setting ``dosing_complete_sessions``.
FUNNEL_HELP: dict[str, str] = {
    "enrolled": "Patients in the cohort.",
    "baseline": "A baseline (a questionnaire in preparation, at most the baseline window before the first "
    "dose) on at least one of the chosen scales; without one no change can be measured, so the patient is "
    "lost to the outcome figures. Due once the patient has dosed.",
    "first_dose": "At least one dosing session. Not yet due while the baseline is still within the baseline "
    "window of the data's last day.",
    "dosing_complete": "At least {sessions} dosing sessions: a full induction course. Not yet due while the "
    f"last session is within {phases.DOSING_ACTIVE_DAYS} days of the data's last day (dosing under way).",
    "integration": "A questionnaire (chosen scales) in integration or follow-up: dosing is behind them. Due "
    f"once the last session is more than {phases.DOSING_ACTIVE_DAYS} days before the data's last day.",
    "follow_up": "A questionnaire (chosen scales) in follow-up. Due once the integration window after the "
    "last session has passed.",
}

_PARAM = re.compile(r"\$([A-Za-z_]\w*)")


def _execute(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Run ``sql`` with the named parameters it uses (DuckDB refuses parameters a statement does not use)."""
    names = set(_PARAM.findall(sql))
    return con.execute(sql, {k: v for k, v in params.items() if k in names})


def _one(cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The single row of a result as a dict."""
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone() or (None,) * len(names), strict=True))


def _grouping(keys: str, breakdown: str | None) -> tuple[str, str]:
    """SELECT columns ``dimension, grp`` and the GROUP BY clause: overall, and by the breakdown dimension.

    ``breakdown`` must be a key of :data:`DIMENSIONS` (the only text from outside built into SQL)."""
    if breakdown is None:
        return "'all' AS dimension, 'all' AS grp", "GROUP BY " + keys
    if breakdown not in DIMENSIONS:
        raise ValueError(f"unknown breakdown {breakdown!r}; one of {', '.join(DIMENSIONS)}")
    select = (
        f"CASE WHEN grouping({breakdown}) = 0 THEN '{breakdown}' ELSE 'all' END AS dimension, "
        f"CASE WHEN grouping({breakdown}) = 0 THEN {breakdown} ELSE 'all' END AS grp"
    )
    return select, f"GROUP BY GROUPING SETS (({keys}), ({keys}, {breakdown}))"


#: The cohort's patients with their breakdown attributes (an unknown one named) and dosing.
_PREPARE_PATIENTS = (
    "CREATE OR REPLACE TEMP TABLE cohort_patients AS SELECT p.patient_id, "
    + ", ".join(f"coalesce(p.{col}, '{UNKNOWN}') AS {dim}" for dim, col in DIMENSIONS.items())
    + ", d.first_session, d.last_session, coalesce(d.n_sessions, 0) AS n_sessions"
    + _COHORT_FROM
    + COHORT_WHERE
)

#: The outcomes view for the cohort and the chosen scales: the one pass over the view.
_PREPARE_OUTCOMES = """
CREATE OR REPLACE TEMP TABLE cohort_outcomes AS
SELECT o.patient_id, o.instrument, o.phase, o.phase_order, o.baseline, o.baseline_on, o.endpoint,
       o.locf_endpoint, o.change, o.itt_change, o.pct_change, o.response, o.remission, o.reliable_improvement,
       o.reliable_deterioration, o.recovery, o.reliable_recovery, o.baseline_clinical, o.itt_flags, o.itt_due,
       c.first_session, c.n_sessions > 0 AS dosed
FROM outcomes o JOIN cohort_patients c USING (patient_id)
WHERE list_contains($scales, o.instrument)
"""

#: The analysis rows of both populations at every table phase, for patients with a baseline.
#: Completers: the phase endpoint where there is one. ITT: patients due for the phase (``itt_due``); the
#: LOCF endpoint and its flags. Baseline rows: each population's baselines. Remission and recovery are
#: undefined (so not counted) for a baseline below the clinical range, as in ``summary()``.
_PREPARE_ROWS = """
CREATE OR REPLACE TEMP VIEW cohort_rows AS
SELECT 'completers' AS population, instrument, phase, phase_order, patient_id, baseline, endpoint AS score,
       change, pct_change, response, remission, reliable_improvement, reliable_deterioration, recovery,
       reliable_recovery, baseline_clinical
FROM cohort_outcomes WHERE baseline IS NOT NULL AND endpoint IS NOT NULL
UNION ALL BY NAME
SELECT 'itt' AS population, instrument, phase, phase_order, patient_id, baseline, locf_endpoint AS score,
       itt_change AS change,
       CASE WHEN baseline > 0 THEN 100.0 * itt_change / baseline END AS pct_change,
       itt_flags.response AS response, itt_flags.remission AS remission,
       itt_flags.reliable_improvement AS reliable_improvement,
       itt_flags.reliable_deterioration AS reliable_deterioration, itt_flags.recovery AS recovery,
       itt_flags.reliable_recovery AS reliable_recovery, baseline_clinical
FROM cohort_outcomes WHERE itt_due
UNION ALL BY NAME
SELECT m.population, instrument, 'baseline' AS phase, 0 AS phase_order, patient_id, baseline,
       baseline AS score, baseline_clinical
FROM cohort_outcomes CROSS JOIN (VALUES ('completers'), ('itt')) AS m(population)
WHERE phase = 'latest' AND baseline IS NOT NULL AND (m.population = 'completers' OR itt_due)
"""

#: The last questionnaire of each week after the first dose (week 1 = days 1–7), chosen scales.
_PREPARE_WEEKS = """
CREATE OR REPLACE TEMP TABLE cohort_weeks AS
SELECT s.patient_id, s.instrument, greatest(1, CAST(ceil(s.day / 7) AS INTEGER)) AS week,
       arg_max(s.total, s.assessed_at) AS score
FROM scores_phased s SEMI JOIN cohort_patients c ON s.patient_id = c.patient_id
WHERE list_contains($scales, s.instrument) AND s.phase <> 'preparation' AND s.day <= 7 * $max_week
GROUP BY ALL
"""

_RATE_AGGREGATES = ", ".join(f"count({r}) AS {r}_n, count(*) FILTER (WHERE {r}) AS {r}_k" for r in RATE_NAMES)


def _phase_stats_sql(breakdown: str | None) -> str:
    """n, mean score, mean change and each rate's k and n per population × scale × phase (× group)."""
    select, group_by = _grouping("population, instrument, phase", breakdown)
    return f"""
    WITH stats AS (
        SELECT population, {select}, instrument, phase, any_value(phase_order) AS phase_order,
               count(*) AS n, avg(score) AS mean, stddev_samp(score) AS sd,
               count(change) AS change_n, avg(change) AS mean_change, stddev_samp(change) AS sd_change,
               count(*) FILTER (WHERE NOT baseline_clinical) AS below_caseness_n,
               {_RATE_AGGREGATES}
        FROM cohort_rows {"JOIN cohort_patients USING (patient_id)" if breakdown else ""}
        {group_by}
    )
    SELECT * FROM stats ORDER BY population, dimension, grp, list_position($scales, instrument), phase_order
    """


def _weekly_sql(breakdown: str | None) -> str:
    """Mean score by week since the first dose (week 0 = baseline) for patients with a baseline.

    Completers: the scores observed that week. ITT: every patient who dosed, the last observation carried
    forward, in each week up to the last one the patient could have been seen by the data's last date
    (``$as_of``). Each observation holds from its week until the next one, so ITT sums are running sums of
    changes: the work grows with the observations, not with patients × weeks.
    """
    dims = ", ".join(DIMENSIONS)
    obs_select, obs_group = _grouping("instrument, week", breakdown)
    itt_select, itt_group = _grouping("instrument, week", breakdown)
    return f"""
    WITH base AS (
        SELECT patient_id, o.instrument, {dims}, o.baseline, o.dosed,
               least($max_week, CAST(ceil(date_diff('day', o.first_session, $as_of) / 7) AS INTEGER))
                   AS horizon
        FROM cohort_outcomes o JOIN cohort_patients USING (patient_id)
        WHERE o.phase = 'latest' AND o.baseline IS NOT NULL
    ),
    observed AS (
        SELECT patient_id, instrument, {dims}, dosed, horizon, 0 AS week, baseline AS score FROM base
        UNION ALL
        SELECT b.patient_id, b.instrument, {", ".join("b." + d for d in DIMENSIONS)}, b.dosed, b.horizon,
               w.week, w.score
        FROM cohort_weeks w JOIN base b USING (patient_id, instrument)
    ),
    completers AS (
        SELECT 'completers' AS population, {obs_select}, instrument, week, count(*) AS n, avg(score) AS mean,
               stddev_samp(score) AS sd
        FROM observed {obs_group}
    ),
    held AS (
        SELECT instrument, {dims}, week, CAST(score AS DOUBLE) AS score,
               least(lead(week, 1, horizon + 1) OVER (PARTITION BY patient_id, instrument ORDER BY week),
                     horizon + 1) AS until
        FROM observed WHERE dosed AND week <= horizon
    ),
    events AS (
        SELECT instrument, {dims}, week, 1 AS dn, score AS d1, score * score AS d2 FROM held
        UNION ALL
        SELECT instrument, {dims}, until, -1, -score, -score * score FROM held WHERE until <= $max_week
    ),
    deltas AS (
        SELECT {itt_select}, instrument, week, sum(dn) AS dn, sum(d1) AS d1, sum(d2) AS d2
        FROM events {itt_group}
    ),
    grid AS (
        SELECT DISTINCT dimension, grp, instrument, w.week
        FROM deltas CROSS JOIN range(0, $max_week + 1) AS w(week)
    ),
    running AS (
        SELECT g.dimension, g.grp, g.instrument, g.week,
               sum(coalesce(d.dn, 0)) OVER w AS n, sum(coalesce(d.d1, 0)) OVER w AS s1,
               sum(coalesce(d.d2, 0)) OVER w AS s2
        FROM grid g LEFT JOIN deltas d USING (dimension, grp, instrument, week)
        WINDOW w AS (PARTITION BY g.dimension, g.grp, g.instrument ORDER BY g.week)
    ),
    itt AS (
        SELECT 'itt' AS population, dimension, grp, instrument, week, CAST(n AS BIGINT) AS n, s1 / n AS mean,
               CASE WHEN n > 1 THEN sqrt(greatest((s2 - s1 * s1 / n) / (n - 1), 0)) END AS sd
        FROM running WHERE n > 0
    ),
    weekly AS (SELECT * FROM completers UNION ALL BY NAME SELECT * FROM itt)
    SELECT population, dimension, grp, instrument, week, n, mean, sd FROM weekly
    ORDER BY population, dimension, grp, list_position($scales, instrument), week
    """


#: Severity band at baseline and at the endpoint, per population × scale. Bands come from the registry
#: (parameters); a scale without validated bands (PCL-5) is split at its caseness (instruments table).
_SHIFT_SQL = """
WITH reg AS (
    SELECT unnest($band_codes) AS code, unnest($band_orders) AS ord, unnest($band_lows) AS low,
           unnest($band_highs) AS high, unnest($band_labels) AS label
),
plain AS (SELECT unnest($plain_codes) AS code, unnest($plain_names) AS name),
bands AS (
    SELECT code, ord, low, high, label FROM reg
    UNION ALL
    SELECT i.code, 1, 0, i.caseness - 1, '< ' || i.caseness FROM instruments i JOIN plain USING (code)
    UNION ALL
    SELECT i.code, 2, i.caseness, i.total_max, '≥ ' || i.caseness || ' ' || plain.name
    FROM instruments i JOIN plain USING (code)
),
score_band AS (SELECT code, unnest(range(low, high + 1)) AS score, ord, label FROM bands),
shift AS (
    SELECT r.population, r.instrument, fb.ord AS from_order, fb.label AS from_band,
           tb.ord AS to_order, tb.label AS to_band, count(*) AS patients
    FROM cohort_rows r
    JOIN score_band fb ON fb.code = r.instrument AND fb.score = r.baseline
    JOIN score_band tb ON tb.code = r.instrument AND tb.score = r.score
    WHERE r.phase = $endpoint
    GROUP BY ALL
)
SELECT * FROM shift ORDER BY population, list_position($scales, instrument), from_order, to_order
"""

#: Per-patient % change at the endpoint, most worsened first. Up to $max_bars patients one bar each;
#: above that each bar is an equal share of them (ntile): its mean % change, commonest category and the
#: number of patients of each category it holds.
_WATERFALL_SQL = """
WITH r AS (
    SELECT population, instrument, pct_change,
           CASE WHEN remission THEN 'remission' WHEN response THEN 'response'
                WHEN reliable_deterioration THEN 'reliable deterioration' ELSE 'no response' END AS category,
           ntile($max_bars) OVER (PARTITION BY population, instrument ORDER BY pct_change DESC, category) - 1
               AS bar
    FROM cohort_rows
    WHERE phase = $endpoint AND pct_change IS NOT NULL
),
counts AS (
    SELECT population, instrument, bar, avg(pct_change) AS pct_change, count(*) AS patients,
           count(*) FILTER (WHERE category = 'remission') AS remission,
           count(*) FILTER (WHERE category = 'response') AS response,
           count(*) FILTER (WHERE category = 'no response') AS no_response,
           count(*) FILTER (WHERE category = 'reliable deterioration') AS reliable_deterioration
    FROM r GROUP BY ALL
),
bars AS (
    SELECT population, instrument, bar, pct_change,
           CASE WHEN remission >= greatest(response, no_response, reliable_deterioration) THEN 'remission'
                WHEN response >= greatest(no_response, reliable_deterioration) THEN 'response'
                WHEN no_response >= reliable_deterioration THEN 'no response'
                ELSE 'reliable deterioration' END AS category,
           patients, remission, response, no_response, reliable_deterioration
    FROM counts
)
SELECT * FROM bars ORDER BY population, list_position($scales, instrument), bar
"""

#: Patients with a baseline whose safety items (PHQ-9 item 9) were endorsed (> 0), at baseline and at the
#: latest questionnaire; only questionnaires that answer the safety item count (DESIGN §5: unanswered is
#: unknown and never clears a flag, so a later questionnaire with item 9 blank does not hide an endorsement).
#: Completers: the latest such questionnaire after baseline. ITT: patients who dosed; the latest such
#: questionnaire or else the baseline one (LOCF).
_SAFETY_ITEMS_SQL = """
WITH s AS (
    SELECT s.patient_id, s.instrument,
           arg_max(s.safety_flag, s.assessed_at) FILTER (WHERE s.phase = 'preparation') AS at_baseline,
           arg_max(s.safety_flag, s.assessed_at) FILTER (WHERE s.phase <> 'preparation') AS at_latest,
           count(*) FILTER (WHERE s.phase <> 'preparation') > 0 AS seen_later
    FROM scores_phased s SEMI JOIN cohort_patients c ON s.patient_id = c.patient_id
    WHERE list_contains($safety_scales, s.instrument) AND s.safety_flag IS NOT NULL
    GROUP BY ALL
),
j AS (
    SELECT o.instrument, o.dosed, s.at_baseline, s.at_latest,
           CASE WHEN s.seen_later THEN s.at_latest ELSE s.at_baseline END AS at_latest_locf
    FROM cohort_outcomes o JOIN s USING (patient_id, instrument)
    WHERE o.phase = 'latest' AND o.baseline IS NOT NULL
),
counts AS (
    SELECT instrument,
           count(*) FILTER (WHERE at_baseline) AS c_baseline_k, count(at_baseline) AS c_baseline_n,
           count(*) FILTER (WHERE at_latest) AS c_latest_k, count(at_latest) AS c_latest_n,
           count(*) FILTER (WHERE at_baseline AND dosed) AS i_baseline_k,
           count(at_baseline) FILTER (WHERE dosed) AS i_baseline_n,
           count(*) FILTER (WHERE at_latest_locf AND dosed) AS i_latest_k,
           count(at_latest_locf) FILTER (WHERE dosed) AS i_latest_n
    FROM j GROUP BY instrument
),
long AS (
    SELECT 'completers' AS population, instrument, 'baseline' AS timepoint, c_baseline_k AS k,
           c_baseline_n AS n FROM counts
    UNION ALL SELECT 'completers', instrument, 'latest', c_latest_k, c_latest_n FROM counts
    UNION ALL SELECT 'itt', instrument, 'baseline', i_baseline_k, i_baseline_n FROM counts
    UNION ALL SELECT 'itt', instrument, 'latest', i_latest_k, i_latest_n FROM counts
)
SELECT population, instrument, timepoint, CAST(k AS BIGINT) AS k, CAST(n AS BIGINT) AS n FROM long
ORDER BY population, list_position($scales, instrument), timepoint
"""

#: Who reached each stage of care (``reached``, regardless of the others) and who reached it and every
#: stage before it (``retained``: the funnel). Questionnaire stages use the chosen scales.
_FUNNEL_SQL = (
    """
WITH q AS (
    SELECT patient_id, bool_or(baseline IS NOT NULL) AS baseline, max(baseline_on) AS baseline_on,
           bool_or(endpoint IS NOT NULL AND phase IN ('integration', 'follow-up')) AS integration,
           bool_or(endpoint IS NOT NULL AND phase = 'follow-up') AS follow_up
    FROM cohort_outcomes GROUP BY patient_id
),
p AS (
    SELECT coalesce(q.baseline, false) AS baseline, c.n_sessions >= 1 AS first_dose,
           c.n_sessions >= $complete_sessions AS dosing_complete,
           coalesce(q.integration, false) AS integration, coalesce(q.follow_up, false) AS follow_up,
           -- Due on the data's last day: a patient who has not reached a stage it is not yet due for is
           -- pending, not lost.
           c.n_sessions >= 1 AS baseline_due,
           q.baseline_on IS NULL OR $as_of - q.baseline_on > $baseline_max_days AS first_dose_due,
           kap_due('integration', c.first_session, c.last_session, $as_of, $window_days)
               AS dosing_complete_due,
           kap_due('integration', c.first_session, c.last_session, $as_of, $window_days)
               AS integration_due,
           kap_due('follow-up', c.first_session, c.last_session, $as_of, $window_days) AS follow_up_due
    FROM cohort_patients c LEFT JOIN q USING (patient_id)
)
SELECT count(*) AS enrolled_reached, count(*) AS enrolled_retained, 0 AS enrolled_pending, """
    + ", ".join(
        f"count(*) FILTER (WHERE {stage}) AS {stage}_reached, "
        f"count(*) FILTER (WHERE {' AND '.join(list(FUNNEL_STAGES)[1 : i + 1])}) AS {stage}_retained, "
        f"count(*) FILTER (WHERE {' AND '.join(list(FUNNEL_STAGES)[1:i])}{' AND ' if i > 1 else ''}"
        f"NOT {stage} AND NOT coalesce({stage}_due, false)) AS {stage}_pending"
        for i, stage in enumerate(list(FUNNEL_STAGES)[1:], start=1)
    )
    + " FROM p"
)

#: Dosing sessions of the cohort with blood pressure above the thresholds (settings; systolic or
#: diastolic, before or after the dose), per session and per patient.
_SESSIONS_SQL = """
WITH t AS (
    SELECT max(value) FILTER (WHERE key = 'bp_sys_threshold') AS sys,
           max(value) FILTER (WHERE key = 'bp_dia_threshold') AS dia
    FROM settings
),
s AS (
    SELECT x.patient_id,
           coalesce(x.bp_sys_pre > t.sys OR x.bp_dia_pre > t.dia OR x.bp_sys_post > t.sys
                    OR x.bp_dia_post > t.dia, false) AS bp_high,
           coalesce(x.bp_sys_pre, x.bp_dia_pre, x.bp_sys_post, x.bp_dia_post) IS NOT NULL AS bp_recorded,
           x.dissociation
    FROM sessions x SEMI JOIN cohort_patients c ON x.patient_id = c.patient_id CROSS JOIN t
)
SELECT count(*) AS sessions, count(*) FILTER (WHERE bp_recorded) AS bp_recorded,
       count(*) FILTER (WHERE bp_high) AS bp_high,
       count(DISTINCT patient_id) AS patients,
       count(DISTINCT patient_id) FILTER (WHERE bp_high) AS bp_high_patients,
       count(dissociation) AS dissociation_recorded, avg(dissociation) AS dissociation_mean,
       stddev_samp(dissociation) AS dissociation_sd,
       any_value(t.sys) AS bp_sys_threshold, any_value(t.dia) AS bp_dia_threshold
FROM s CROSS JOIN t
"""

#: How often each side effect was reported: sessions and patients.
_SIDE_EFFECTS_SQL = """
WITH e AS (
    SELECT x.patient_id, trim(lower(unnest(string_split(x.side_effects, ';')))) AS side_effect
    FROM sessions x SEMI JOIN cohort_patients c ON x.patient_id = c.patient_id
    WHERE x.side_effects IS NOT NULL
)
SELECT side_effect, count(*) AS sessions, count(DISTINCT patient_id) AS patients
FROM e WHERE side_effect <> ''
GROUP BY side_effect ORDER BY sessions DESC, side_effect
"""

_WEEKLY_COLUMNS = ["population", "dimension", "grp", "instrument", "week", "n", "mean", "sd"]
#: The last date in the data: the newest questionnaire or dosing session.
_AS_OF_SQL = """SELECT greatest((SELECT max(assessed_on) FROM scores),
                                (SELECT max(session_date) FROM sessions)) AS as_of"""
_THRESHOLDS = ("caseness", "response_pct", "remission_below", "reliable_change")
_THRESHOLDS_SQL = (
    "SELECT code, " + ", ".join(_THRESHOLDS) + " FROM instruments WHERE list_contains($scales, code) "
    "ORDER BY list_position($scales, code)"
)
_SAFETY_SCALES_SQL = "SELECT list(code) AS codes FROM instruments WHERE len(safety_items) > 0"
#: Per scale × endpoint phase: patients with a baseline who dosed but are not yet due (left out of ITT), and
#: patients with a baseline below the clinical range (left out of remission and recovery).
_LEFT_OUT_SQL = """
SELECT instrument, phase, count(*) FILTER (WHERE dosed AND NOT itt_due) AS itt_not_yet_due,
       count(*) FILTER (WHERE NOT baseline_clinical) AS below_caseness
FROM cohort_outcomes WHERE baseline IS NOT NULL
GROUP BY instrument, phase ORDER BY list_position($scales, instrument), any_value(phase_order)
"""


@dataclass(frozen=True)
class CohortReport:
    """Everything the clinic outcomes page shows for one cohort (aggregates only, no patient rows).

    Tables carry ``population`` (``completers`` / ``itt``); breakdown-aware ones carry ``dimension``
    (``all``, or the breakdown) and ``grp`` (``all``, or the group's value).
    """

    scales: tuple[str, ...]
    endpoint: str
    breakdown: str | None
    min_cell: int
    as_of: dt.date | None  # the last date in the data (a score or a session)
    thresholds: dict[str, dict[str, int]]  # scale → caseness, response_pct, remission_below, reliable_change
    funnel: pd.DataFrame  # stage, label, help, reached, retained, pct_enrolled, not_yet_due, lost
    phase_stats: pd.DataFrame  # population, dimension, grp, instrument, phase, n, mean, sd, rate k/n …
    weekly: pd.DataFrame  # population, dimension, grp, instrument, week, n, mean, sd (empty unless asked)
    shift: pd.DataFrame  # population, instrument, from_order, from_band, to_order, to_band, patients
    waterfall: pd.DataFrame  # population, instrument, bar, pct_change, category, patients, <category>
    safety_items: pd.DataFrame  # population, instrument, timepoint (baseline / latest), k, n
    sessions: dict[str, Any]  # sessions, bp_recorded, bp_high, patients, bp_high_patients, thresholds
    side_effects: pd.DataFrame  # side_effect, sessions, patients
    joint: pd.DataFrame  # population, phase, phase_order, k, n (joint NHS recovery; empty unless both scales)
    left_out: pd.DataFrame  # instrument, phase, itt_not_yet_due, below_caseness
    settings: dict[str, int] = field(default_factory=dict)  # the general settings in force

    def tiles(self) -> dict[str, int]:
        """Patients in the cohort, who started dosing, finished dosing, reached integration, follow-up."""
        reached = dict(zip(self.funnel["stage"], self.funnel["reached"], strict=True))
        return {
            k: int(reached[k])
            for k in ("enrolled", "first_dose", "dosing_complete", "integration", "follow_up")
        }


def _bands_params(scales: Sequence[str]) -> dict[str, list[Any]]:
    """Severity bands of the chosen scales from the registry, as parallel lists for SQL parameters."""
    out: dict[str, list[Any]] = {
        k: [] for k in ("band_codes", "band_orders", "band_lows", "band_highs", "band_labels")
    }
    out.update(plain_codes=[], plain_names=[])
    for code in scales:
        inst = reg.get(code)
        if not inst.bands:
            out["plain_codes"].append(inst.code)
            out["plain_names"].append(inst.caseness_label.split(" (")[0])
        for order, band in enumerate(inst.bands, start=1):
            out["band_codes"].append(inst.code)
            out["band_orders"].append(order)
            out["band_lows"].append(band.low)
            out["band_highs"].append(band.high)
            out["band_labels"].append(band.label)
    return out


def _funnel_frame(row: dict[str, Any], complete_sessions: int) -> pd.DataFrame:
    """The funnel: ``lost`` at a stage counts only patients who were due for it on the data's last day
    (the others are ``not_yet_due``)."""
    import pandas as pd

    stages = list(FUNNEL_STAGES)
    retained = [int(row[f"{s}_retained"] or 0) for s in stages]
    pending = [int(row[f"{s}_pending"] or 0) for s in stages]
    enrolled = retained[0]
    return pd.DataFrame(
        {
            "stage": stages,
            "label": [FUNNEL_STAGES[s].format(sessions=complete_sessions) for s in stages],
            "help": [FUNNEL_HELP[s].format(sessions=complete_sessions) for s in stages],
            "reached": [int(row[f"{s}_reached"] or 0) for s in stages],
            "retained": retained,
            "pct_enrolled": [100.0 * r / enrolled if enrolled else float("nan") for r in retained],
            "not_yet_due": pending,
            "lost": [0] + [a - b - p for a, b, p in zip(retained, retained[1:], pending[1:], strict=False)],
        }
    )


def report(
    con: duckdb.DuckDBPyConnection,
    cohort: CohortFilter | None = None,
    scales: Sequence[str] | None = None,
    *,
    endpoint: str = "latest",
    breakdown: str | None = None,
    weekly: bool = False,
) -> CohortReport:
    """Every panel of the clinic outcomes page: the cohort, the chosen scales (default all), the endpoint
    phase for the severity shift and the waterfall, an optional breakdown (a key of :data:`DIMENSIONS`),
    and the trajectory by week since the first dose when ``weekly`` (a second pass over the scores).

    Uses temporary tables of ``con`` (allowed on a read-only connection): give it a short-lived one.
    """
    import pandas as pd

    if endpoint not in db.ENDPOINT_PHASES:
        raise ValueError(f"unknown endpoint {endpoint!r}; one of {', '.join(db.ENDPOINT_PHASES)}")
    if breakdown is not None and breakdown not in DIMENSIONS:
        raise ValueError(f"unknown breakdown {breakdown!r}; one of {', '.join(DIMENSIONS)}")
    codes = [reg.get(s).code for s in (scales if scales is not None else reg.BY_CODE)]
    safety_scales = _one(con.execute(_SAFETY_SCALES_SQL))["codes"] or []
    general = {k: int(v) for k, v in db.get_settings(con).items()}
    params: dict[str, Any] = {
        **(cohort or CohortFilter()).params(),
        **_bands_params(codes),
        "scales": codes,
        "safety_scales": [c for c in safety_scales if c in codes],
        "endpoint": endpoint,
        "complete_sessions": general["dosing_complete_sessions"],
        "baseline_max_days": general["baseline_max_days"],
        "window_days": general["integration_window_days"],
        "joint_scales": _joint_params(codes),
        "max_week": TRAJECTORY_MAX_WEEK,
        "max_bars": WATERFALL_MAX_BARS,
        "as_of": _one(con.execute(_AS_OF_SQL))["as_of"],
    }
    prepare = [_PREPARE_PATIENTS, _PREPARE_OUTCOMES, _PREPARE_ROWS] + ([_PREPARE_WEEKS] if weekly else [])
    for statement in prepare:
        _execute(con, statement, params)
    sessions = _one(_execute(con, _SESSIONS_SQL, params))
    thresholds = _execute(con, _THRESHOLDS_SQL, params).fetchall()
    return CohortReport(
        scales=tuple(codes),
        endpoint=endpoint,
        breakdown=breakdown,
        min_cell=general["min_cell"],
        as_of=params["as_of"],
        thresholds={row[0]: dict(zip(_THRESHOLDS, row[1:], strict=True)) for row in thresholds},
        funnel=_funnel_frame(_one(_execute(con, _FUNNEL_SQL, params)), general["dosing_complete_sessions"]),
        phase_stats=_execute(con, _phase_stats_sql(breakdown), params).df(),
        weekly=_execute(con, _weekly_sql(breakdown), params).df()
        if weekly
        else pd.DataFrame(columns=_WEEKLY_COLUMNS),
        shift=_execute(con, _SHIFT_SQL, params).df(),
        waterfall=_execute(con, _WATERFALL_SQL, params).df(),
        safety_items=_execute(con, _SAFETY_ITEMS_SQL, params).df(),
        sessions={k: int(v) if isinstance(v, int) else v for k, v in sessions.items()},
        side_effects=_execute(con, _SIDE_EFFECTS_SQL, params).df(),
        joint=_execute(con, joint_sql("cohort_outcomes"), params).df(),
        left_out=_execute(con, _LEFT_OUT_SQL, params).df(),
        settings=general,
    )


# --- Display frames: the report's aggregates with their intervals (a few dozen rows each) -----------------


#: Columns of one rate in the display frames: the rate, k, n, interval, and n < min_cell.
RATE_SUFFIXES: tuple[str, ...] = ("", "_k", "_n", "_low", "_high", "_small")


def _rate_columns(frame: pd.DataFrame, k: str, n: str, prefix: str, min_cell: int) -> pd.DataFrame:
    """Add ``<prefix>`` (the rate), ``_k``, ``_n``, ``_low``, ``_high`` (Wilson 95%) and ``_small``
    (n < min_cell) from the counts in columns ``k`` and ``n``."""
    rates = [stats.wilson(int(a), int(b)) for a, b in zip(frame[k], frame[n], strict=True)]
    frame[f"{prefix}_k"] = frame[k]
    frame[f"{prefix}_n"] = frame[n]
    frame[prefix] = [r.rate for r in rates]
    frame[f"{prefix}_low"] = [r.ci_low for r in rates]
    frame[f"{prefix}_high"] = [r.ci_high for r in rates]
    frame[f"{prefix}_small"] = frame[n] < min_cell
    return frame


def _mean_columns(frame: pd.DataFrame, n: str, mean: str, sd: str, prefix: str) -> pd.DataFrame:
    """Replace ``mean`` by ``<prefix>`` and add ``_low`` / ``_high`` (95% Student-t interval)."""
    import pandas as pd

    means = [
        stats.t_interval(int(a), None if pd.isna(m) else float(m), None if pd.isna(s) else float(s))
        for a, m, s in zip(frame[n], frame[mean], frame[sd], strict=True)
    ]
    frame[prefix] = [m.mean for m in means]
    frame[f"{prefix}_low"] = [m.ci_low for m in means]
    frame[f"{prefix}_high"] = [m.ci_high for m in means]
    return frame


def phase_table(rep: CohortReport, population: str) -> pd.DataFrame:
    """The phase table: per scale × phase (baseline, end of dosing, end of integration, follow-up, latest),
    n, mean score and mean change with t intervals, and every rate with k, n and a Wilson interval.
    ``small`` marks rows (``<rate>_small`` rates) from fewer than ``min_cell`` patients. Every phase of a
    scale with a baseline has its row; a phase nobody reached shows n = 0."""
    import pandas as pd

    stats_ = rep.phase_stats
    part = stats_[(stats_["population"] == population) & (stats_["dimension"] == "all")]
    counts = ["n", "change_n"] + [f"{r}_{x}" for r in RATE_NAMES for x in ("k", "n")]
    scales = [s for s in rep.scales if s in set(part["instrument"])]
    grid = pd.MultiIndex.from_product([scales, TABLE_PHASES], names=["instrument", "phase"])
    columns = ["mean", "sd", "mean_change", "sd_change", *counts]
    frame = part.set_index(["instrument", "phase"])[columns].reindex(grid).reset_index()
    frame[counts] = frame[counts].fillna(0).astype("int64")
    frame.insert(2, "phase_label", frame["phase"].map(PHASE_LABELS))
    frame["small"] = frame["n"] < rep.min_cell
    _mean_columns(frame, "n", "mean", "sd", "mean")
    _mean_columns(frame, "change_n", "mean_change", "sd_change", "mean_change")
    for r in RATE_NAMES:
        _rate_columns(frame, f"{r}_k", f"{r}_n", r, rep.min_cell)
    return frame.drop(columns=["sd", "sd_change"])


def joint_rate(rep: CohortReport, population: str, phase: str | None = None) -> stats.Rate | None:
    """The joint NHS recovery rate at ``phase`` (default the report's endpoint), or None when the report's
    scales do not include both scales of the measure."""
    if rep.joint.empty and not all(c in rep.scales for c in reg.JOINT_RECOVERY_SCALES):
        return None
    j = rep.joint
    row = j[(j["population"] == population) & (j["phase"] == (phase or rep.endpoint))]
    k, n = (int(row["k"].iloc[0]), int(row["n"].iloc[0])) if len(row) else (0, 0)
    return stats.wilson(k, n)


def left_out(rep: CohortReport, phase: str | None = None) -> dict[str, dict[str, int]]:
    """Per scale at ``phase`` (default the endpoint): ``itt_not_yet_due`` and ``below_caseness`` counts."""
    frame = rep.left_out[rep.left_out["phase"] == (phase or rep.endpoint)]
    return {
        str(r.instrument): {
            "itt_not_yet_due": int(r.itt_not_yet_due),
            "below_caseness": int(r.below_caseness),
        }
        for r in frame.itertuples()
    }


def headline(rep: CohortReport, population: str) -> pd.DataFrame:
    """Per scale at the report's endpoint: n, response and remission with Wilson intervals."""
    table = phase_table(rep, population)
    cols = ["instrument", "n", "small"] + [
        f"{r}{s}" for r in ("response", "remission") for s in RATE_SUFFIXES
    ]
    return table[table["phase"] == rep.endpoint][cols].reset_index(drop=True)


def breakdown_table(rep: CohortReport, population: str) -> pd.DataFrame:
    """Per scale × group of the breakdown at the endpoint: n, response and remission with intervals."""
    stats_ = rep.phase_stats
    part = stats_[
        (stats_["population"] == population)
        & (stats_["dimension"] != "all")
        & (stats_["phase"] == rep.endpoint)
    ]
    frame = part[["instrument", "grp", "n", "response_k", "response_n", "remission_k", "remission_n"]]
    order = {code: i for i, code in enumerate(rep.scales)}
    frame = frame.sort_values(
        ["instrument", "grp"], key=lambda c: c.map(order) if c.name == "instrument" else c
    )
    frame = frame.reset_index(drop=True).rename(columns={"grp": "group"})
    frame["small"] = frame["n"] < rep.min_cell
    for r in ("response", "remission"):
        _rate_columns(frame, f"{r}_k", f"{r}_n", r, rep.min_cell)
    return frame


def trajectory(rep: CohortReport, population: str, by: str = "phase") -> pd.DataFrame:
    """Mean score with its t interval per scale × group × x: ``by="phase"`` (baseline and the phase
    endpoints, from the phase table) or ``by="week"`` (weeks since the first dose; needs ``weekly``)."""
    if by == "phase":
        src = rep.phase_stats[rep.phase_stats["phase"] != "latest"]
        src = src[src["population"] == population]
        frame = src[["dimension", "grp", "instrument", "phase", "phase_order", "n", "mean", "sd"]].copy()
        frame["x"] = frame["phase"].map(PHASE_LABELS)
        frame = frame.rename(columns={"phase_order": "order"})
    elif by == "week":
        src = rep.weekly[rep.weekly["population"] == population]
        frame = src[["dimension", "grp", "instrument", "week", "n", "mean", "sd"]].copy()
        frame["x"] = frame["week"]
        frame["order"] = frame["week"]
    else:
        raise ValueError(f"trajectory by 'phase' or 'week', not {by!r}")
    frame = frame.reset_index(drop=True)
    frame["small"] = frame["n"] < rep.min_cell
    return _mean_columns(frame, "n", "mean", "sd", "mean").drop(columns=["sd"])


def shift_table(rep: CohortReport, population: str) -> pd.DataFrame:
    """Baseline band → endpoint band counts, with each baseline band's share going to each endpoint band."""
    frame = (
        rep.shift[rep.shift["population"] == population].drop(columns=["population"]).reset_index(drop=True)
    )
    totals = frame.groupby(["instrument", "from_order"])["patients"].transform("sum")
    frame["share"] = frame["patients"] / totals
    return frame


def safety_tables(rep: CohortReport, population: str) -> dict[str, pd.DataFrame]:
    """The safety panel: safety items endorsed at baseline and latest, blood pressure above threshold,
    side effects (sessions and patients), and reliable deterioration per scale at the endpoint."""
    import pandas as pd

    items = rep.safety_items[rep.safety_items["population"] == population].drop(columns=["population"])
    items = _rate_columns(items.reset_index(drop=True), "k", "n", "rate", rep.min_cell)
    s = rep.sessions
    bp = pd.DataFrame(
        {
            "measure": [
                "Sessions with blood pressure above threshold",
                "Patients with at least one such session",
            ],
            "k": [s.get("bp_high") or 0, s.get("bp_high_patients") or 0],
            "n": [s.get("bp_recorded") or 0, s.get("patients") or 0],
        }
    )
    bp = _rate_columns(bp, "k", "n", "rate", rep.min_cell)
    effects = rep.side_effects.copy()
    effects["all_sessions"] = s.get("sessions") or 0
    effects["all_patients"] = s.get("patients") or 0
    effects = _rate_columns(effects, "sessions", "all_sessions", "session_rate", rep.min_cell)
    effects = _rate_columns(effects, "patients", "all_patients", "patient_rate", rep.min_cell)
    table = phase_table(rep, population)
    deterioration = table[table["phase"] == rep.endpoint][
        ["instrument"] + [f"reliable_deterioration{x}" for x in RATE_SUFFIXES]
    ].reset_index(drop=True)
    return {"items": items, "blood_pressure": bp, "side_effects": effects, "deterioration": deterioration}
