"""The "peer": per-patient outcomes the way a clinic analyst would write them by hand in pandas.

Read the CSVs, derive phases from the sessions, take the baseline (last preparation score) and each phase's
endpoint, and compute change, % change, response, remission, reliable change and recovery. It is a
reference point for speed only: the product's numbers come from the SQL views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

RESPONSE_PCT = {"PHQ-9": 50, "GAD-7": 50, "PCL-5": 30}
REMISSION_BELOW = {"PHQ-9": 5, "GAD-7": 5, "PCL-5": 33}
RELIABLE_CHANGE = {"PHQ-9": 6, "GAD-7": 4, "PCL-5": 10}
CASENESS = {"PHQ-9": 10, "GAD-7": 10, "PCL-5": 33}
WINDOW_DAYS = 84


def pandas_outcomes(patients_csv: Path, sessions_csv: Path, scores_csv: Path) -> pd.DataFrame:
    pd.read_csv(patients_csv)
    sessions = pd.read_csv(sessions_csv, usecols=["patient_id", "session_date"], parse_dates=["session_date"])
    scores = pd.read_csv(
        scores_csv, usecols=["patient_id", "instrument", "assessed_on", "total"], parse_dates=["assessed_on"]
    )
    span = sessions.groupby("patient_id")["session_date"].agg(first="min", last="max").reset_index()
    s = scores.merge(span, on="patient_id", how="left")
    phase = np.select(
        [
            s["first"].isna() | (s["assessed_on"] <= s["first"]),
            s["assessed_on"] <= s["last"],
            s["assessed_on"] <= s["last"] + pd.Timedelta(days=WINDOW_DAYS),
        ],
        ["preparation", "dosing", "integration"],
        default="follow-up",
    )
    s["phase"] = phase
    s = s.sort_values(["patient_id", "instrument", "assessed_on"])
    last = s.groupby(["patient_id", "instrument", "phase"], sort=False)["total"].last().unstack("phase")
    post = s[s["phase"] != "preparation"].groupby(["patient_id", "instrument"], sort=False)["total"].last()
    last["latest"] = post
    baseline = last.get("preparation")
    frames = []
    for phase_name in ("dosing", "integration", "follow-up", "latest"):
        if phase_name not in last:
            continue
        out = pd.DataFrame({"baseline": baseline, "endpoint": last[phase_name]})
        out["phase"] = phase_name
        frames.append(out)
    res = pd.concat(frames).reset_index()
    res["change"] = res["endpoint"] - res["baseline"]
    res["pct_change"] = np.where(res["baseline"] > 0, 100 * res["change"] / res["baseline"], np.nan)
    pct = res["instrument"].map(RESPONSE_PCT)
    rc = res["instrument"].map(RELIABLE_CHANGE)
    case = res["instrument"].map(CASENESS)
    res["response"] = (res["baseline"] - res["endpoint"]) * 100 >= pct * res["baseline"]
    res["remission"] = res["endpoint"] < res["instrument"].map(REMISSION_BELOW)
    res["reliable_improvement"] = res["change"] <= -rc
    res["reliable_deterioration"] = res["change"] >= rc
    res["recovery"] = (res["baseline"] >= case) & (res["endpoint"] < case)
    res["reliable_recovery"] = res["recovery"] & res["reliable_improvement"]
    return res.sort_values(["patient_id", "instrument", "phase"])
