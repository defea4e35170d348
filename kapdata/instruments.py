"""The scale registry: every fact the product knows about a questionnaire lives here.

Adding a scale is a data change in this file only: append an :class:`Instrument` to ``INSTRUMENTS``.
The registry is written into the database (table ``instruments``) so that SQL views join the
thresholds instead of repeating them; the settings page overrides the thresholds there.

Every default threshold names where it comes from in ``threshold_sources`` (one entry per threshold:
caseness, response_pct, remission_below, reliable_change): a publication listed in full in ``sources``, or
the words "this product's convention" when no publication gives that number. The definitions page, the
data dictionary and the README all show these texts, so they say the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Band:
    """A severity band: ``low`` to ``high`` inclusive."""

    low: int
    high: int
    label: str


@dataclass(frozen=True)
class Instrument:
    code: str  # display name and stored value, e.g. "PHQ-9"
    title: str
    construct: str
    n_items: int
    item_min: int
    item_max: int
    bands: tuple[Band, ...]
    caseness: int  # clinical range: total >= caseness
    caseness_label: str
    response_pct: int  # response: reduction from baseline >= response_pct percent
    remission_below: int  # remission: endpoint < remission_below
    reliable_change: int  # reliable change in points (a published value; see threshold_sources)
    safety_items: tuple[int, ...]  # an answer > 0 on any of these items flags the patient
    loinc_panel: str
    loinc_total: str
    loinc_items: dict[int, str] = field(default_factory=dict)
    item_labels: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    subscales: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Where each default threshold comes from, keyed by THRESHOLD_KEYS; see the module docstring.
    threshold_sources: dict[str, str] = field(default_factory=dict)

    @property
    def total_min(self) -> int:
        return self.n_items * self.item_min

    @property
    def total_max(self) -> int:
        return self.n_items * self.item_max

    @property
    def key(self) -> str:
        """The normalised lookup key: letters and digits only, upper case ("PHQ9")."""
        return normalize_key(self.code)

    def band_of(self, total: int) -> str | None:
        for band in self.bands:
            if band.low <= total <= band.high:
                return band.label
        return None


def normalize_key(name: str) -> str:
    """``"phq 9"``, ``"PHQ-9"``, ``"Phq_9"`` → ``"PHQ9"``."""
    return re.sub(r"[^A-Za-z0-9]", "", name).upper()


#: The per-scale thresholds that carry a source (the columns of the ``instruments`` table).
THRESHOLD_KEYS: tuple[str, ...] = ("caseness", "response_pct", "remission_below", "reliable_change")
#: Said of a threshold that no publication gives: the product chose it.
CONVENTION = "this product's convention"

NHS_TALKING_THERAPIES = (
    "NHS Talking Therapies for anxiety and depression: the NHS Talking Therapies manual (NHS England) and "
    "the annual reports' outcome definitions (NHS Digital): caseness PHQ-9 ≥ 10, GAD-7 ≥ 8; reliable "
    "improvement a fall of ≥ 6 (PHQ-9) or ≥ 4 (GAD-7) points; recovery."
)
KROENKE_2001 = "Kroenke K, Spitzer RL, Williams JB. The PHQ-9. J Gen Intern Med 2001;16:606-13."
SPITZER_2006 = (
    "Spitzer RL, et al. A brief measure for assessing generalized anxiety disorder: the GAD-7. "
    "Arch Intern Med 2006;166:1092-7."
)
NCPTSD = "National Center for PTSD. Using the PTSD Checklist for DSM-5 (PCL-5)."
MARX_2022 = (
    "Marx BP, Lee DJ, Norman SB, et al. Reliable and clinically significant change in the Clinician-"
    "Administered PTSD Scale for DSM-5 and PTSD Checklist for DSM-5 among male veterans. Psychol Assess "
    "2022;34:197-203."
)
#: The published results shown beside a clinic's (kapdata.benchmarks) use the same response and remission
#: cut-offs for the PHQ-9 (and Hull et al. for the GAD-7); named here so a threshold can point to them.
MCINNES_HULL = "the cut-off used by McInnes et al. 2022 and Hull et al. 2022 (published results)"

PHQ9 = Instrument(
    code="PHQ-9",
    title="Patient Health Questionnaire-9",
    construct="depression",
    n_items=9,
    item_min=0,
    item_max=3,
    bands=(
        Band(0, 4, "minimal"),
        Band(5, 9, "mild"),
        Band(10, 14, "moderate"),
        Band(15, 19, "moderately severe"),
        Band(20, 27, "severe"),
    ),
    caseness=10,
    caseness_label="clinical range (PHQ-9 ≥ 10)",
    response_pct=50,
    remission_below=5,
    reliable_change=6,
    safety_items=(9,),
    loinc_panel="44249-1",
    loinc_total="44261-6",
    loinc_items={
        1: "44250-9",
        2: "44255-8",
        3: "44259-0",
        4: "44254-1",
        5: "44251-7",
        6: "44258-2",
        7: "44252-5",
        8: "44253-3",
        9: "44260-8",
    },
    item_labels=(
        "Little interest or pleasure",
        "Feeling down, depressed, hopeless",
        "Sleep problems",
        "Tired, little energy",
        "Poor appetite or overeating",
        "Feeling bad about yourself",
        "Trouble concentrating",
        "Moving/speaking slowly or restless",
        "Thoughts that you would be better off dead, or of hurting yourself",
    ),
    sources=(
        KROENKE_2001,
        "Löwe B, et al. Monitoring depression treatment outcomes with the PHQ-9. Med Care 2004;42:1194-201.",
        NHS_TALKING_THERAPIES,
    ),
    threshold_sources={
        "caseness": "Kroenke 2001 (a total ≥ 10: 88% sensitivity and specificity for major depression); "
        "also the caseness of NHS Talking Therapies for anxiety and depression",
        "response_pct": f"{CONVENTION}: the usual ≥ 50% reduction in depression trials, {MCINNES_HULL}",
        "remission_below": "Kroenke 2001: below the mild band (0–4 minimal); " + MCINNES_HULL,
        "reliable_change": "NHS Talking Therapies for anxiety and depression: reliable improvement (6 "
        "points), a published value, not a Jacobson–Truax index computed from this clinic's data",
    },
)

GAD7 = Instrument(
    code="GAD-7",
    title="Generalized Anxiety Disorder-7",
    construct="anxiety",
    n_items=7,
    item_min=0,
    item_max=3,
    bands=(
        Band(0, 4, "minimal"),
        Band(5, 9, "mild"),
        Band(10, 14, "moderate"),
        Band(15, 21, "severe"),
    ),
    caseness=8,
    caseness_label="clinical range (GAD-7 ≥ 8)",
    response_pct=50,
    remission_below=5,
    reliable_change=4,
    safety_items=(),
    loinc_panel="69737-5",
    loinc_total="70274-6",
    loinc_items={
        1: "69725-0",
        2: "68509-9",
        3: "69733-4",
        4: "69734-2",
        5: "69735-9",
        6: "69689-8",
        7: "69736-7",
    },
    item_labels=(
        "Nervous, anxious, on edge",
        "Not able to stop worrying",
        "Worrying too much",
        "Trouble relaxing",
        "Restless",
        "Easily annoyed or irritable",
        "Afraid something awful might happen",
    ),
    sources=(
        SPITZER_2006,
        "Toussaint A, et al. Sensitivity to change and minimal clinically important difference of the GAD-7. "
        "J Affect Disord 2020;265:395-401.",
        NHS_TALKING_THERAPIES,
    ),
    threshold_sources={
        "caseness": "NHS Talking Therapies for anxiety and depression: caseness (GAD-7 ≥ 8); the severity "
        "bands keep Spitzer 2006's line at 10 (moderate)",
        "response_pct": f"{CONVENTION}: ≥ 50% reduction, as for the PHQ-9; the cut-off used by Hull et al. "
        "2022 (published results)",
        "remission_below": "Spitzer 2006: below the mild band (0–4 minimal); the cut-off used by Hull et al. "
        "2022 (published results)",
        "reliable_change": "NHS Talking Therapies for anxiety and depression: reliable improvement (4 "
        "points), a published value, not a Jacobson–Truax index computed from this clinic's data",
    },
)

PCL5 = Instrument(
    code="PCL-5",
    title="PTSD Checklist for DSM-5",
    construct="post-traumatic stress",
    n_items=20,
    item_min=0,
    item_max=4,
    bands=(),  # no validated severity bands; the probable-PTSD threshold is shown instead
    caseness=33,
    caseness_label="probable PTSD (PCL-5 ≥ 33; 31–33 in the literature)",
    response_pct=30,
    remission_below=33,
    reliable_change=10,
    safety_items=(),
    loinc_panel="101697-1",
    loinc_total="101698-9",
    item_labels=(
        "Intrusive memories",
        "Disturbing dreams",
        "Flashbacks",
        "Upset at reminders",
        "Physical reactions to reminders",
        "Avoiding memories",
        "Avoiding external reminders",
        "Trouble remembering the event",
        "Strong negative beliefs",
        "Blaming self or others",
        "Strong negative feelings",
        "Loss of interest",
        "Feeling distant from others",
        "Trouble feeling positive",
        "Irritability or aggression",
        "Risky or destructive behaviour",
        "Hypervigilance",
        "Easily startled",
        "Difficulty concentrating",
        "Trouble sleeping",
    ),
    sources=(
        "Blevins CA, et al. The PTSD Checklist for DSM-5 (PCL-5). J Trauma Stress 2015;28:489-98.",
        "Bovin MJ, et al. Psychometric properties of the PCL-5. Psychol Assess 2016;28:1379-91.",
        NCPTSD,
        MARX_2022,
    ),
    threshold_sources={
        "caseness": "National Center for PTSD: a cut-point of 31–33 indicates probable PTSD (Bovin 2016); "
        "the top of that range",
        "response_pct": f"{CONVENTION}: no publication the registry cites gives a PCL-5 response percentage; "
        "≥ 30% is this product's choice, not a validated threshold",
        "remission_below": f"{CONVENTION}: no longer above the probable-PTSD cut-point (below 33)",
        "reliable_change": "National Center for PTSD: a 5–10 point change is reliable (an estimate carried "
        "over from the PCL for DSM-IV); 10 is the top of that range. Marx 2022 report a PCL-5 reliable "
        "change index of 15–18 points in male veterans",
    },
    subscales={
        "B": (1, 2, 3, 4, 5),
        "C": (6, 7),
        "D": (8, 9, 10, 11, 12, 13, 14),
        "E": (15, 16, 17, 18, 19, 20),
    },
)

#: PCL-5 provisional DSM-5 diagnosis: items scored >= 2 count as endorsed; at least this many per cluster.
PCL5_DSM5_ITEM_THRESHOLD = 2
PCL5_DSM5_RULE = {"B": 1, "C": 1, "D": 2, "E": 2}

INSTRUMENTS: tuple[Instrument, ...] = (PHQ9, GAD7, PCL5)
#: The joint NHS Talking Therapies recovery measure: a case on any of these scales at baseline (total at or
#: above its caseness), and on none of them at the endpoint. Needs a baseline and an endpoint on each.
JOINT_RECOVERY_SCALES: tuple[str, ...] = ("PHQ-9", "GAD-7")
BY_CODE: dict[str, Instrument] = {i.code: i for i in INSTRUMENTS}
BY_KEY: dict[str, Instrument] = {i.key: i for i in INSTRUMENTS}
MAX_ITEMS = max(i.n_items for i in INSTRUMENTS)


def lookup(name: str) -> Instrument | None:
    """Find an instrument by any accepted spelling (``PHQ-9``, ``phq9``, ``PHQ 9``)."""
    return BY_KEY.get(normalize_key(name))


def get(code: str) -> Instrument:
    inst = lookup(code)
    if inst is None:
        raise KeyError(f"unknown instrument {code!r}; known: {', '.join(BY_CODE)}")
    return inst


#: Jacobson & Truax (1991) reliable change: RC = 1.96 × SD × √(2 × (1 − r)). The concept the thresholds
#: name; the default values themselves are the published ones of ``threshold_sources["reliable_change"]``.
RELIABLE_CHANGE_FORMULA = "RC = 1.96 × SD₁ × √(2 × (1 − r))"
RELIABLE_CHANGE_SOURCE = (
    "Jacobson NS, Truax P. Clinical significance: a statistical approach to defining meaningful change "
    "in psychotherapy research. J Consult Clin Psychol 1991;59:12-9."
)
