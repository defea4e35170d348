"""Per-patient outcomes (DESIGN §5): baseline, phase endpoints, change, response, remission, ...

The arithmetic lives in the ``outcomes`` view (see ``db.VIEWS_SQL``); this module selects from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line's outcomes file needs neither pandas nor more than DuckDB
    import duckdb
    import pandas as pd

from kapdata import csvsafe
from kapdata import instruments as reg

#: The CLI's ``outcomes`` file: exactly these columns, in this order.
OUTCOME_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "instrument",
    "phase",
    "baseline",
    "endpoint",
    "endpoint_on",
    "change",
    "pct_change",
    "response",
    "remission",
    "reliable_improvement",
    "reliable_deterioration",
    "recovery",
    "reliable_recovery",
)
BOOLEAN_COLUMNS: tuple[str, ...] = OUTCOME_COLUMNS[8:]


#: Every row of the outcomes file, in file order (the columns are our constants).
OUTCOMES_SQL = (
    "SELECT " + ", ".join(OUTCOME_COLUMNS) + " FROM outcomes ORDER BY patient_id, instrument, phase_order"
)
_FILTERED_SQL = OUTCOMES_SQL.replace(
    " ORDER BY",
    " WHERE (CAST($code AS VARCHAR) IS NULL OR instrument = $code)"
    " AND (CAST($pid AS VARCHAR) IS NULL OR patient_id = $pid) ORDER BY",
)


def outcomes_frame(
    con: duckdb.DuckDBPyConnection, instrument: str | None = None, patient_id: str | None = None
) -> pd.DataFrame:
    """One row per patient × instrument × endpoint phase (dosing, integration, follow-up, latest)."""
    code = reg.get(instrument).code if instrument else None
    return con.execute(_FILTERED_SQL, {"code": code, "pid": patient_id}).df()


def _file_column(c: str) -> str:
    if c in ("patient_id", "instrument", "phase"):
        return csvsafe.sql_neutralised(c) + " AS " + c
    if c in ("baseline", "endpoint", "change"):
        return f"CAST({c} AS INTEGER) AS {c}"
    if c == "pct_change":
        return f"round({c}, 6) AS {c}"
    return c


#: The outcomes file as DuckDB writes it: text neutralised, counts as integers, the percentage to 6 decimals.
_FILE_SQL = (
    "SELECT "
    + ", ".join(_file_column(c) for c in OUTCOME_COLUMNS)
    + " FROM outcomes WHERE (CAST($code AS VARCHAR) IS NULL OR instrument = $code)"
    " ORDER BY patient_id, instrument, phase_order"
)


def write_outcomes_csv(
    con: duckdb.DuckDBPyConnection, out: str | os.PathLike[str], instrument: str | None = None
) -> int:
    """Write the outcomes file (with DuckDB's own CSV writer); returns the number of rows written."""
    code = reg.get(instrument).code if instrument else None
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    return csvsafe.write_query_csv(con, _FILE_SQL, {"code": code}, target)
