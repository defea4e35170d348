"""Published results that the clinic outcomes page places beside the clinic's own (DESIGN §5).

These are other studies' numbers, kept as data with their citations. They are shown in their own table
and as their own markers, labelled as published results, and never enter the clinic's figures. Each study
names the patients its rates are on (its denominator) and its endpoint, so a reader can compare like with
like: the clinic's remission counts only patients who started in the clinical range, as Hull et al. did;
McInnes et al.'s rates are on every patient analysed after induction. Populations and endpoints differ from
a clinic's, so a comparison is a rough guide, not a test.
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
    population: str  # who the rates are about: the n they are computed on
    endpoint: str  # when the rates were measured
    remission_denominator: str  # how the study defined the patients its remission rate is on
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
        treatment="IV ketamine (infusions), 178 community practices in the United States",
        population="537 patients: those who completed induction (4–8 infusions over 7–28 days) with "
        "sufficient PHQ-9 data, out of 9,016 patients in the records; the rates are on the 537",
        endpoint="14–31 days after induction",
        remission_denominator="all 537 analysed patients (PHQ-9 < 5 at the endpoint); the abstract states no "
        "clinical-range floor at baseline, so this is not limited to PHQ-9 ≥ 10 as the clinic's remission is",
        citation="McInnes LA, Qian JJ, Gargeya RS, DeBattista C, Heifets BD. A retrospective analysis of "
        "ketamine intravenous therapy for depression in real-world care settings. J Affect Disord 2022.",
        doi="10.1016/j.jad.2021.12.097",
    ),
    Study(
        key="hull2022",
        short="Hull et al. 2022",
        treatment="At-home sublingual ketamine-assisted therapy, 4 sessions over 4 weeks (telehealth)",
        population="1,247 patients who completed treatment with sufficient data (entry needed PHQ-9 ≥ 10 or "
        "GAD-7 ≥ 10); the rates are on them",
        endpoint="after the 4th session",
        remission_denominator="patients with a baseline ≥ 10 on that scale (score < 5 after the 4th "
        "session), like the clinic's remission among patients who started in the clinical range",
        citation="Hull TD, Malgaroli M, Gazzaley A, et al. At-home, sublingual ketamine telehealth is a safe "
        "and effective treatment for moderate to severe anxiety and depression: findings from a large, "
        "prospective, open-label effectiveness trial. J Affect Disord 2022;314:59-67.",
        doi="10.1016/j.jad.2022.07.004",
    ),
)
#: How to read the published rows beside the clinic's (the definitions page and the README say the same).
COMPARISON_NOTE = (
    "Other studies' patients, for comparison only; not this clinic's data. Compare like with like: the "
    "clinic's completers at the matching endpoint (McInnes et al.: 14–31 days after induction, closest to "
    "end of dosing or early integration; Hull et al.: after the 4th session, closest to end of dosing), and "
    "for remission the clinic's rate among patients who started in the clinical range, as Hull et al. "
    "counted it (McInnes et al. counted every analysed patient)."
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
                "remission_denominator": study.remission_denominator,
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
        "remission_denominator",
    ]
    return pd.DataFrame(list(rows.values()), columns=columns)
