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


def _distinct(con: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    allowed = {"clinic", "provider", "route", "primary_condition", "age_band", "sex"}
    if column not in allowed:
        raise ValueError(column)
    rows = con.execute(
        "SELECT DISTINCT " + column + " FROM patients WHERE " + column + " IS NOT NULL ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def filter_options(con: duckdb.DuckDBPyConnection) -> FilterOptions:
    span = con.execute("SELECT min(first_session), max(first_session) FROM patient_dosing").fetchone()
    pairs = con.execute(
        """SELECT clinic, list(DISTINCT provider ORDER BY provider) FROM patients
           WHERE clinic IS NOT NULL AND provider IS NOT NULL GROUP BY clinic ORDER BY clinic"""
    ).fetchall()
    return FilterOptions(
        clinics=_distinct(con, "clinic"),
        providers=_distinct(con, "provider"),
        routes=_distinct(con, "route"),
        conditions=_distinct(con, "primary_condition"),
        age_bands=_distinct(con, "age_band"),
        sexes=_distinct(con, "sex"),
        first_start=span[0] if span else None,
        last_start=span[1] if span else None,
        providers_by_clinic={c: list(p) for c, p in pairs},
    )
