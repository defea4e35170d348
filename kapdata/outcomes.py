"""Per-patient outcomes (DESIGN §5): baseline, phase endpoints, change, response, remission, ...

The arithmetic lives in the ``outcomes`` view (see ``db.VIEWS_SQL``); this module selects from it.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def format_for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Booleans as ``true``/``false``, integers without decimals, empty where undefined."""
    out = frame.copy()
    for col in BOOLEAN_COLUMNS:
        if col in out:
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else ("true" if v else "false"))
    for col in ("baseline", "endpoint", "change"):
        if col in out:
            out[col] = out[col].astype("Int64")
    if "pct_change" in out:
        out["pct_change"] = out["pct_change"].astype("Float64").round(6)
    if "endpoint_on" in out:
        out["endpoint_on"] = pd.to_datetime(out["endpoint_on"]).dt.strftime("%Y-%m-%d")
    return out


def write_outcomes_csv(
    con: duckdb.DuckDBPyConnection, out: str | os.PathLike[str], instrument: str | None = None
) -> int:
    """Write the outcomes file; returns the number of rows written."""
    frame = format_for_csv(outcomes_frame(con, instrument))
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    csvsafe.write_csv(frame, target, columns=list(OUTCOME_COLUMNS), na_rep="")
    return len(frame)
