"""The values a cohort can be filtered by (what the sidebar offers), read from the database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class FilterOptions:
    clinics: list[str]
    providers: list[str]
    routes: list[str]
    conditions: list[str]
    age_bands: list[str]
    sexes: list[str]
    first_start: dt.date | None  # earliest first dosing session
    last_start: dt.date | None  # latest first dosing session
    providers_by_clinic: dict[str, list[str]]


_IN_SCOPE = "($scope_all OR coalesce(list_contains(CAST($scope AS VARCHAR[]), clinic), false))"


def _distinct(con: duckdb.DuckDBPyConnection, column: str, sp: dict[str, object]) -> list[str]:
    allowed = {"clinic", "provider", "route", "primary_condition", "age_band", "sex"}
    if column not in allowed:
        raise ValueError(column)
    rows = con.execute(
        "SELECT DISTINCT "
        + column
        + " FROM patients WHERE "
        + column
        + " IS NOT NULL AND "
        + _IN_SCOPE
        + " ORDER BY 1",
        sp,
    ).fetchall()
    return [r[0] for r in rows]


def filter_options(con: duckdb.DuckDBPyConnection, scope: tuple[str, ...] | None = None) -> FilterOptions:
    """What the sidebar offers; with a ``scope`` (the person's clinics) only values of those clinics."""
    sp: dict[str, object] = {"scope_all": scope is None, "scope": list(scope or ())}
    span = con.execute(
        "SELECT min(first_session), max(first_session) FROM patient_dosing "
        "WHERE patient_id IN (SELECT patient_id FROM patients WHERE " + _IN_SCOPE + ")",
        sp,
    ).fetchone()
    pairs = con.execute(
        """SELECT clinic, list(DISTINCT provider ORDER BY provider) FROM patients
           WHERE clinic IS NOT NULL AND provider IS NOT NULL AND """
        + _IN_SCOPE
        + " GROUP BY clinic ORDER BY clinic",
        sp,
    ).fetchall()
    return FilterOptions(
        clinics=_distinct(con, "clinic", sp),
        providers=_distinct(con, "provider", sp),
        routes=_distinct(con, "route", sp),
        conditions=_distinct(con, "primary_condition", sp),
        age_bands=_distinct(con, "age_band", sp),
        sexes=_distinct(con, "sex", sp),
        first_start=span[0] if span else None,
        last_start=span[1] if span else None,
        providers_by_clinic={c: list(p) for c, p in pairs},
    )
