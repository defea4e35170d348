"""The scale registry: names, ranges and the thresholds the outcome definitions use."""

from __future__ import annotations

import pytest

from kapdata import instruments as reg


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("PHQ-9", "PHQ-9"),
        ("phq9", "PHQ-9"),
        ("PHQ 9", "PHQ-9"),
        ("phq_9", "PHQ-9"),
        (" Phq-9 ", "PHQ-9"),
        ("gad7", "GAD-7"),
        ("GAD 7", "GAD-7"),
        ("pcl-5", "PCL-5"),
        ("PCL5", "PCL-5"),
    ],
)
def test_lookup_accepts_every_spelling(name, code):
    assert reg.lookup(name) is reg.BY_CODE[code]
    assert reg.get(name).code == code


def test_unknown_instrument():
    assert reg.lookup("BDI-II") is None
    assert reg.lookup("PHQ") is None
    with pytest.raises(KeyError, match="unknown instrument 'BDI-II'; known: PHQ-9, GAD-7, PCL-5"):
        reg.get("BDI-II")


@pytest.mark.parametrize(
    (
        "code",
        "n_items",
        "item_max",
        "total_max",
        "caseness",
        "response_pct",
        "remission_below",
        "reliable_change",
    ),
    [
        ("PHQ-9", 9, 3, 27, 10, 50, 5, 6),
        ("GAD-7", 7, 3, 21, 8, 50, 5, 4),
        ("PCL-5", 20, 4, 80, 33, 30, 33, 10),
    ],
)
def test_ranges_and_thresholds(
    code, n_items, item_max, total_max, caseness, response_pct, remission_below, reliable_change
):
    i = reg.BY_CODE[code]
    assert (i.n_items, i.item_min, i.item_max, i.total_min, i.total_max) == (
        n_items,
        0,
        item_max,
        0,
        total_max,
    )
    assert (i.caseness, i.response_pct, i.remission_below, i.reliable_change) == (
        caseness,
        response_pct,
        remission_below,
        reliable_change,
    )
    assert len(i.item_labels) == n_items


def test_phq9_item_9_is_the_only_safety_item():
    assert reg.PHQ9.safety_items == (9,)
    assert reg.PHQ9.item_labels[8] == "Thoughts that you would be better off dead, or of hurting yourself"
    assert reg.GAD7.safety_items == () and reg.PCL5.safety_items == ()
    assert reg.MAX_ITEMS == 20


@pytest.mark.parametrize(
    ("instrument", "total", "band"),
    [
        (reg.PHQ9, 0, "minimal"),
        (reg.PHQ9, 4, "minimal"),
        (reg.PHQ9, 5, "mild"),
        (reg.PHQ9, 14, "moderate"),
        (reg.PHQ9, 15, "moderately severe"),
        (reg.PHQ9, 27, "severe"),
        (reg.PHQ9, 28, None),
        (reg.GAD7, 15, "severe"),
        (reg.GAD7, 21, "severe"),
        (reg.PCL5, 50, None),
    ],
)
def test_severity_bands(instrument, total, band):
    assert instrument.band_of(total) == band


def test_bands_cover_the_whole_range_without_gaps():
    for i in (reg.PHQ9, reg.GAD7):
        covered = [t for b in i.bands for t in range(b.low, b.high + 1)]
        assert covered == list(range(i.total_min, i.total_max + 1))


def test_pcl5_clusters_cover_every_item_once():
    items = sorted(n for cluster in reg.PCL5.subscales.values() for n in cluster)
    assert items == list(range(1, 21))


def test_loinc_codes():
    assert reg.PHQ9.loinc_total == "44261-6" and len(reg.PHQ9.loinc_items) == 9
    assert reg.GAD7.loinc_total == "70274-6" and len(reg.GAD7.loinc_items) == 7


def test_codes_and_keys_are_unique():
    assert len({i.code for i in reg.INSTRUMENTS}) == len({i.key for i in reg.INSTRUMENTS}) == 3
    assert reg.normalize_key("phq 9") == "PHQ9"


def test_gad7_caseness_is_nhs_but_its_severity_band_line_stays_at_10():
    assert reg.GAD7.caseness == 8 and reg.GAD7.caseness_label == "clinical range (GAD-7 ≥ 8)"
    assert reg.GAD7.band_of(9) == "mild" and reg.GAD7.band_of(10) == "moderate"


@pytest.mark.parametrize("inst", reg.INSTRUMENTS, ids=lambda i: i.code)
def test_every_default_threshold_has_a_source_in_the_registry(inst):
    assert tuple(inst.threshold_sources) == reg.THRESHOLD_KEYS
    assert all(text.strip() for text in inst.threshold_sources.values())


def test_nhs_talking_therapies_is_a_source_of_the_phq9_and_gad7_only():
    assert reg.NHS_TALKING_THERAPIES in reg.PHQ9.sources and reg.NHS_TALKING_THERAPIES in reg.GAD7.sources
    assert reg.NHS_TALKING_THERAPIES not in reg.PCL5.sources
    assert reg.MARX_2022 in reg.PCL5.sources
