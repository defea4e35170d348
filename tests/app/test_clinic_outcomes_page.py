"""The Clinic outcomes page in AppTest: its numbers are the report's; filters and the toggle change them."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from kapdata import cohort, db

from .conftest import ROOT


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    at.switch_page("pages/clinic_outcomes.py").run()
    assert not at.exception, at.exception
    return at


def expected(path: Path, flt: cohort.CohortFilter | None = None, **kw: object) -> cohort.CohortReport:
    with db.reader(path) as con:
        return cohort.report(con, flt, **kw)


def metrics(at: AppTest, label: str) -> list[str]:
    return [m.value for m in at.metric if m.label == label]


def shown_rates(rep: cohort.CohortReport, population: str, name: str) -> list[str]:
    return [f"{100 * r:.1f}%" for r in cohort.headline(rep, population)[name]]


def test_page_shows_the_cohort_counts_and_completers_rates(app_env: Path) -> None:
    at = open_page()
    rep = expected(app_env)
    tiles = rep.tiles()
    assert metrics(at, "Patients in cohort") == [f"{tiles['enrolled']:,}"]
    assert metrics(at, "Started dosing") == [f"{tiles['first_dose']:,}"]
    assert metrics(at, "Finished dosing") == [f"{tiles['dosing_complete']:,}"]
    assert metrics(at, "Reached follow-up") == [f"{tiles['follow_up']:,}"]
    assert metrics(at, "Response") == shown_rates(rep, "completers", "response")
    assert any(i.value.startswith("**Completers:") for i in at.info)
    assert len(at.get("plotly_chart")) >= 5


def test_itt_toggle_changes_the_numbers_and_says_so(app_env: Path) -> None:
    at = open_page()
    before = metrics(at, "Response")
    at.radio(key="co_population").set_value("itt").run()
    assert not at.exception, at.exception
    rep = expected(app_env)
    after = metrics(at, "Response")
    assert after == shown_rates(rep, "itt", "response")
    assert after != before
    assert any(i.value.startswith("**Intention-to-treat:") for i in at.info)
    assert any("intention-to-treat" in s.value for s in at.subheader)


def test_clinic_filter_changes_every_count(app_env: Path) -> None:
    at = open_page()
    clinic = at.multiselect(key="f_clinics").options[0]
    at.multiselect(key="f_clinics").set_value([clinic]).run()
    assert not at.exception, at.exception
    rep = expected(app_env, cohort.CohortFilter(clinics=(clinic,)))
    assert metrics(at, "Patients in cohort") == [f"{rep.tiles()['enrolled']:,}"]
    assert metrics(at, "Remission") == shown_rates(rep, "completers", "remission")
    assert rep.tiles()["enrolled"] < expected(app_env).tiles()["enrolled"]


def test_endpoint_choice_moves_the_headline_rates(app_env: Path) -> None:
    at = open_page()
    at.selectbox(key="co_endpoint").set_value("dosing").run()
    assert not at.exception, at.exception
    rep = expected(app_env, endpoint="dosing")
    assert metrics(at, "Response") == shown_rates(rep, "completers", "response")
    assert any("at end of dosing" in s.value for s in at.subheader)


def test_breakdown_and_weekly_trajectory_draw_their_panels(app_env: Path) -> None:
    at = open_page()
    tables_before = len(at.dataframe)
    at.selectbox(key="co_breakdown").set_value("route").run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == tables_before + 1  # the breakdown table
    routes = set(cohort.breakdown_table(expected(app_env, breakdown="route"), "completers")["group"])
    shown = next(d.value for d in at.dataframe if "Route" in d.value.columns)
    assert set(shown["Route"]) == routes
    at.radio(key="co_axis").set_value("week").run()
    assert not at.exception, at.exception
    assert any("last score carried forward" in c.value for c in at.caption)


def test_no_scale_chosen_asks_for_one(app_env: Path) -> None:
    at = open_page()
    at.multiselect(key="co_scales").set_value([]).run()
    assert not at.exception, at.exception
    assert any("Choose at least one scale" in i.value for i in at.info)
    assert not metrics(at, "Patients in cohort")


def test_empty_database_shows_zeros_and_a_hint(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty.duckdb"
    with db.session(empty):
        pass
    monkeypatch.setenv("KAP_DB", str(empty))
    monkeypatch.setattr("kapdata.bootstrap.SAMPLE_DIR", tmp_path / "nothing-here")
    at = open_page()
    assert metrics(at, "Patients in cohort") == ["0"]
    assert any("No patient in this cohort has a baseline" in i.value for i in at.info)


def test_cards_say_who_is_left_out_and_show_the_joint_nhs_recovery(app_env: Path) -> None:
    at = open_page()
    rep = expected(app_env)
    head = cohort.headline(rep, "completers")
    captions = [c.value for c in at.caption]
    for _, row in head.iterrows():
        below = int(row["n"]) - int(row["remission_n"])
        if below:
            assert any(
                c.startswith(f"{below:,} of {int(row['n']):,} with a baseline below") for c in captions
            )
    joint = cohort.joint_rate(rep, "completers")
    assert joint is not None and joint.n > 0
    assert any(
        c.startswith("Joint recovery (NHS Talking Therapies, PHQ-9 and GAD-7)")
        and f"{joint.k}/{joint.n}" in c
        for c in captions
    )
    at.radio(key="co_population").set_value("itt").run()
    due = cohort.left_out(expected(app_env))
    pending = sum(v["itt_not_yet_due"] for v in due.values())
    if pending:
        assert any("not yet due for this endpoint" in c.value for c in at.caption)
    funnel_tables = [d.value for d in at.dataframe if "Not yet due" in getattr(d.value, "columns", [])]
    assert funnel_tables, "the retention table has a Not yet due column"


# --- the cached views: a new data version, a write, the signed-in person's scope ---------------------------


def waterfall_spec(at: AppTest) -> str:
    specs = [
        c.proto.spec for c in at.get("plotly_chart") if "Change from baseline per patient" in c.proto.spec
    ]
    assert len(specs) == 1
    return specs[0]


def waterfall_counts(rep: cohort.CohortReport, population: str = "completers") -> list[str]:
    fall = rep.waterfall[rep.waterfall["population"] == population]
    return [f"{int(n):,} patients" for n in fall.groupby("instrument", sort=False)["patients"].sum()]


def test_a_new_import_an_undo_and_a_settings_change_show_new_numbers_at_once(
    app_db: Path, tmp_path: Path, monkeypatch
) -> None:
    """The page's figures and tables are cached per data version: every write shows on the next rerun of
    the same session, whether it came through the app or not (here: the command line's functions)."""
    import shutil

    from kapdata import ingest
    from kapdata import settings as ks
    from tests.conftest import PATIENTS_HEADER, csv_lines, load, write_text

    path = tmp_path / "kap.duckdb"
    shutil.copy(app_db, path)
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = open_page()
    enrolled = expected(path).tiles()["enrolled"]
    assert metrics(at, "Patients in cohort") == [f"{enrolled:,}"]
    first_spec = waterfall_spec(at)

    rows = [(f"NEW{i}", "Northside", "PR1", "25-34", "female", "MDD", "IV") for i in range(3)]
    result = load(path, write_text(tmp_path / "patients.csv", csv_lines(PATIENTS_HEADER, rows)))
    at.run()
    assert not at.exception, at.exception
    assert metrics(at, "Patients in cohort") == [f"{enrolled + 3:,}"]

    batch = result.files[0].batch_id
    assert batch is not None
    ingest.undo_batch(batch, path)
    at.run()
    assert metrics(at, "Patients in cohort") == [f"{enrolled:,}"]

    before = metrics(at, "Response")
    ks.update(path, thresholds={"PHQ-9": {"response_pct": 20}, "GAD-7": {"response_pct": 20}})
    at.run()
    assert not at.exception, at.exception
    rep = expected(path)
    after = metrics(at, "Response")
    assert after == shown_rates(rep, "completers", "response") and after != before
    assert waterfall_spec(at) != first_spec  # the response line (and categories) moved: a new figure


def test_clear_caches_drops_the_cached_views(app_env: Path, monkeypatch) -> None:
    """A write in the app (import, undo, settings) clears the views too, not only the cached queries."""
    from kapui import clinic
    from kapui.data import clear_caches

    built: list[int] = []

    class Counting(clinic.View):
        def __init__(self, rep: cohort.CohortReport) -> None:
            built.append(1)
            super().__init__(rep)

    monkeypatch.setattr(clinic, "View", Counting)
    at = open_page()
    n = len(built)
    at.run()
    assert len(built) == n  # a rerun draws from the cached view
    clear_caches()
    at.run()
    assert not at.exception, at.exception
    assert len(built) == n + 1


def test_two_directors_never_get_each_others_cached_figures(
    app_db: Path, tmp_path: Path, monkeypatch
) -> None:
    """Two people's sessions share the server's cache; its key holds the signed-in person's scope."""
    import datetime as dt
    import shutil

    from kapdata import accounts

    path = tmp_path / "kap.duckdb"
    shutil.copy(app_db, path)
    with db.reader(path) as con:
        clinics = [r[0] for r in con.execute("SELECT DISTINCT clinic FROM patients ORDER BY 1").fetchall()]
    assert len(clinics) >= 2
    for clinic_name in clinics[:2]:
        accounts.add(
            path, f"{clinic_name.lower()}@clinic.example", "director", (clinic_name,), "a long password 1"
        )
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.delenv("KAP_AUDIT_DB", raising=False)
    monkeypatch.chdir(ROOT)

    def director_page(clinic_name: str) -> AppTest:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        email = f"{clinic_name.lower()}@clinic.example"
        at.session_state["_kap_auth"] = {
            "email": email,
            "source": "local",
            "signed_in_at": now,
            "last_seen": now,
        }
        at.run()
        at.switch_page("pages/clinic_outcomes.py").run()
        assert not at.exception, at.exception
        return at

    shown = {}
    for clinic_name in (clinics[0], clinics[1], clinics[0]):  # A fills the cache, B, then A again
        at = director_page(clinic_name)
        rep = expected(path, cohort.CohortFilter(scope=(clinic_name,)))
        assert metrics(at, "Patients in cohort") == [f"{rep.tiles()['enrolled']:,}"]
        spec = waterfall_spec(at)
        assert all(count in spec for count in waterfall_counts(rep))
        shown.setdefault(clinic_name, spec)
        assert spec == shown[clinic_name]
    assert shown[clinics[0]] != shown[clinics[1]]


def test_switching_back_and_forth_shows_the_same_page(app_env: Path) -> None:
    """The cached parts are shared, never modified: completers → ITT → completers draws the first page."""
    at = open_page()

    def page(at: AppTest) -> tuple:
        frames = tuple(d.value.to_csv() for d in at.dataframe)
        return tuple(m.value for m in at.metric), frames, tuple(c.proto.spec for c in at.get("plotly_chart"))

    first = page(at)
    at.radio(key="co_population").set_value("itt").run()
    itt = page(at)
    at.radio(key="co_population").set_value("completers").run()
    assert page(at) == first != itt
    at.radio(key="co_population").set_value("itt").run()
    assert page(at) == itt
