"""Published results that the clinic outcomes page places beside the clinic's own (DESIGN §5).

These are other studies' numbers, kept as data with their citations. They are shown in their own table
and as their own markers, labelled as published results, and never enter the clinic's figures. Their
populations and endpoints differ from a clinic's: both analysed patients with enough data after the
induction course (closest to this app's *completers*), so a comparison is a rough guide, not a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Study:
    key: str
    short: str  # "McInnes et al. 2022"
    treatment: str  # what patients received
    population: str  # who the rates are about
    endpoint: str  # when the rates were measured
    citation: str
    doi: str


@dataclass(frozen=True)
class PublishedRate:
    study: str  # Study.key
    instrument: str  # registry code
    measure: str  # "response" / "remission", as defined in DESIGN §5 (the same cut-offs)
    rate: float  # a proportion, 0–1


STUDIES: tuple[Study, ...] = (
    Study(
        key="mcinnes2022",
        short="McInnes et al. 2022",
        treatment="IV ketamine (infusions), 178 community practices",
        population="9,016 patients in the records; rates among those who completed induction "
        "(4–8 infusions) with enough data",
        endpoint="14–31 days after induction",
        citation="McInnes LA, Qian JJ, Gargeya RS, DeBattista C, Heifets BD. A retrospective analysis of "
        "ketamine intravenous therapy for depression in real-world care settings. J Affect Disord 2022.",
        doi="10.1016/j.jad.2021.12.097",
    ),
    Study(
        key="hull2022",
        short="Hull et al. 2022",
        treatment="At-home sublingual ketamine-assisted therapy, 4 sessions (telehealth)",
        population="patients who completed treatment with enough data",
        endpoint="after the 4th session",
        citation="Hull TD, Malgaroli M, Gazzaley A, et al. At-home, sublingual ketamine telehealth is a safe "
        "and effective treatment for moderate to severe anxiety and depression: findings from a large, "
        "prospective, open-label effectiveness trial. J Affect Disord 2022;314:59-67.",
        doi="10.1016/j.jad.2022.07.004",
    ),
)
BY_KEY: dict[str, Study] = {s.key: s for s in STUDIES}

RATES: tuple[PublishedRate, ...] = (
    PublishedRate("mcinnes2022", "PHQ-9", "response", 0.536),
    PublishedRate("mcinnes2022", "PHQ-9", "remission", 0.289),
    PublishedRate("hull2022", "PHQ-9", "response", 0.628),
    PublishedRate("hull2022", "PHQ-9", "remission", 0.326),
    PublishedRate("hull2022", "GAD-7", "response", 0.629),
    PublishedRate("hull2022", "GAD-7", "remission", 0.313),
)


def published(scales: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per study × scale with its response and remission rates and the citation."""
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for r in RATES:
        if scales is not None and r.instrument not in scales:
            continue
        study = BY_KEY[r.study]
        row = rows.setdefault(
            (r.study, r.instrument),
            {
                "study": study.short,
                "instrument": r.instrument,
                "treatment": study.treatment,
                "population": study.population,
                "endpoint": study.endpoint,
                "response": None,
                "remission": None,
                "citation": f"{study.citation} doi:{study.doi}",
            },
        )
        row[r.measure] = r.rate
    columns = [
        "study",
        "instrument",
        "treatment",
        "population",
        "endpoint",
        "response",
        "remission",
        "citation",
    ]
    return pd.DataFrame(list(rows.values()), columns=columns)
