"""Aggregate outcomes for clinic directors (DESIGN §5): completers and intention-to-treat.

- Completers at a phase: patients with a baseline and a score in that phase.
- Intention-to-treat (ITT): every patient with a baseline who had at least one dosing session; a missing
  endpoint carries the last observation forward (baseline included: no data counts as no response).
Rates carry k, n and a Wilson 95% interval; means a 95% t-interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from kapdata import db, stats

RATE_NAMES: tuple[str, ...] = (
    "response",
    "remission",
    "reliable_improvement",
    "reliable_deterioration",
    "recovery",
    "reliable_recovery",
)


@dataclass(frozen=True)
class CohortFilter:
    """Which patients are in the cohort. Empty lists mean "all"."""

    start_from: dt.date | None = None  # first dosing session on or after
    start_to: dt.date | None = None  # first dosing session on or before
    clinics: Sequence[str] = field(default_factory=tuple)
    providers: Sequence[str] = field(default_factory=tuple)
    routes: Sequence[str] = field(default_factory=tuple)
    conditions: Sequence[str] = field(default_factory=tuple)

    def params(self) -> dict[str, Any]:
        return {
            "start_from": self.start_from,
            "start_to": self.start_to,
            "clinics": list(self.clinics),
            "providers": list(self.providers),
            "routes": list(self.routes),
            "conditions": list(self.conditions),
        }


#: SQL selecting the patient_ids in the cohort; parameters from ``CohortFilter.params()``.
COHORT_SQL = """
    SELECT p.patient_id FROM patients p LEFT JOIN patient_dosing d USING (patient_id)
    WHERE (CAST($start_from AS DATE) IS NULL OR d.first_session >= $start_from)
      AND (CAST($start_to AS DATE) IS NULL OR d.first_session <= $start_to)
      AND (len($clinics) = 0 OR list_contains($clinics, p.clinic))
      AND (len($providers) = 0 OR list_contains($providers, p.provider))
      AND (len($routes) = 0 OR list_contains($routes, p.route))
      AND (len($conditions) = 0 OR list_contains($conditions, p.primary_condition))
"""


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
    -- Recovery rates count only patients who started in the clinical range (NHS Talking Therapies).
    itt_flags AS (
        SELECT instrument, phase, phase_order, baseline, locf_endpoint AS endpoint, itt_change AS change,
               itt_flags.response, itt_flags.remission, itt_flags.reliable_improvement,
               itt_flags.reliable_deterioration,
               CASE WHEN baseline_clinical THEN itt_flags.recovery END AS recovery,
               CASE WHEN baseline_clinical THEN itt_flags.reliable_recovery END AS reliable_recovery
        FROM o WHERE dosed
    ),
    completers AS (
        SELECT * REPLACE (CASE WHEN baseline_clinical THEN recovery END AS recovery,
                          CASE WHEN baseline_clinical THEN reliable_recovery END AS reliable_recovery)
        FROM o WHERE endpoint IS NOT NULL
    ),
    agg_c AS ({_agg("completers", "c_")}),
    agg_i AS ({_agg("itt_flags", "i_")}),
    base AS (SELECT instrument, phase, phase_order, count(*) AS with_baseline FROM o GROUP BY ALL)
    SELECT b.instrument, b.phase, b.phase_order, b.with_baseline,
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
            "itt": "patients with a baseline and at least one dosing session; missing endpoint carried "
            "forward from the last observation, baseline included",
            "rate_interval": "Wilson 95% score interval",
            "mean_interval": "95% Student-t interval",
            "settings": settings,
            "instruments": thresholds,
        },
        "results": summary(con, cohort),
    }
