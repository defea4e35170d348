"""Numbers for the app's overview page: what is in the database and the headline outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from kapdata import cohort, db
from kapdata import instruments as reg


@dataclass(frozen=True)
class Overview:
    patients: int
    patients_known: int
    sessions: int
    scores: int
    started_dosing: int
    first_score: str | None
    last_score: str | None
    scores_by_phase: pd.DataFrame  # instrument, phase, scores, patients
    patients_by_phase: pd.DataFrame  # phase, patients (by the phase of each patient's latest score)
    headline: list[dict[str, Any]]  # summary rows at the "latest" endpoint, one per instrument
    batches: int
    #: The thresholds in force per scale (code → caseness, response_pct, remission_below, reliable_change),
    #: so the tiles say which rule a rate uses and why its n can be smaller than the completers.
    thresholds: dict[str, dict[str, int]] = field(default_factory=dict)


#: The patients a scope may see (``$scope_all``: every patient).
_SCOPED = (
    "(SELECT patient_id FROM patients "
    "WHERE $scope_all OR coalesce(list_contains(CAST($scope AS VARCHAR[]), clinic), false))"
)


def overview(con: duckdb.DuckDBPyConnection, scope: tuple[str, ...] | None = None) -> Overview:
    """``scope``: the clinics the person may see (``Principal.scope()``); None for every clinic. Every count
    and the headline are then of those clinics' patients only (in SQL); the import batches are those that
    brought in a row of those patients (a batch of another clinic's file is not counted)."""
    sp = {"scope_all": scope is None, "scope": list(scope or ())}
    inside = f"patient_id IN {_SCOPED}"
    # Every clinic: every batch, without reading the tables for their batch numbers.
    batches_scoped = (
        ""
        if scope is None
        else f"""AND batch_id IN (
            SELECT batch_id FROM patients WHERE {inside}
            UNION SELECT attributes_batch_id FROM patients WHERE {inside}
            UNION SELECT batch_id FROM sessions WHERE {inside}
            UNION SELECT batch_id FROM scores WHERE {inside})"""
    )
    counts = con.execute(
        f"""SELECT (SELECT count(*) FROM patients WHERE {inside}),
                  (SELECT count(*) FROM patients WHERE attributes_known AND {inside}),
                  (SELECT count(*) FROM sessions WHERE {inside}),
                  (SELECT count(*) FROM scores WHERE {inside}),
                  (SELECT count(*) FROM patient_dosing WHERE {inside}),
                  (SELECT CAST(min(assessed_on) AS VARCHAR) FROM scores WHERE {inside}),
                  (SELECT CAST(max(assessed_on) AS VARCHAR) FROM scores WHERE {inside}),
                  (SELECT count(*) FROM batches WHERE undone_at IS NULL {batches_scoped})""",
        sp,
    ).fetchone()
    assert counts is not None
    by_phase = con.execute(
        f"""SELECT instrument, phase, count(*) AS scores, count(DISTINCT patient_id) AS patients
            FROM scores_phased WHERE {inside} GROUP BY instrument, phase
            ORDER BY list_position($codes, instrument), list_position($phases, phase)""",
        {"codes": list(reg.BY_CODE), "phases": list(db.PHASES)} | sp,
    ).df()
    current = con.execute(
        f"""WITH last AS (
                SELECT patient_id, arg_max(phase, assessed_at) AS phase
                FROM scores_phased WHERE {inside} GROUP BY patient_id)
            SELECT phase, count(*) AS patients FROM last GROUP BY phase
            ORDER BY list_position($phases, phase)""",
        {"phases": list(db.PHASES)} | sp,
    ).df()
    thresholds = {
        str(code): {
            "caseness": int(c),
            "response_pct": int(r),
            "remission_below": int(m),
            "reliable_change": int(rc),
        }
        for code, c, r, m, rc in con.execute(
            "SELECT code, caseness, response_pct, remission_below, reliable_change FROM instruments"
        ).fetchall()
    }
    rank = {code: i for i, code in enumerate(reg.BY_CODE)}
    headline = sorted(
        (row for row in cohort.summary(con, cohort.CohortFilter(scope=scope)) if row["phase"] == "latest"),
        key=lambda r: rank[r["instrument"]],
    )
    return Overview(
        patients=int(counts[0]),
        patients_known=int(counts[1]),
        sessions=int(counts[2]),
        scores=int(counts[3]),
        started_dosing=int(counts[4]),
        first_score=counts[5],
        last_score=counts[6],
        scores_by_phase=by_phase,
        patients_by_phase=current,
        headline=headline,
        batches=int(counts[7]),
        thresholds=thresholds,
    )
