"""Organisation sign-in end to end: a real OIDC authorization-code flow in Debian's chromium.

The test starts its own identity provider (the npm package `oauth2-mock-server`, installed by `scripts/test`
into tests/e2e/oidc/node_modules; see tests/e2e/oidc/server.js), writes a throwaway secrets.toml whose
`[auth]` section points at it, and starts `streamlit run dashboard.py` with `--secrets.files` naming that
file, so the project's own `.streamlit/` is neither read for secrets nor changed. The database is a new
sample cohort with one account, a director, made by `python -m kapdata users add`.
"""

from __future__ import annotations

import csv
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kapdata import ingest, sample

from .conftest import ROOT, _free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is missing: no OIDC test provider"),
]

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
DIRECTOR = "oidc.director@clinic.test"
STRANGER = "no.account@clinic.test"
PAGES = (
    "Overview",
    "Caseload",
    "Patient trends",
    "Clinic outcomes",
    "Research export",
    "Data import",
    "Settings",
)
PATIENT_ID = re.compile(r"\bK\d{5}\b")  # the sample cohort's patient IDs: K00001 ...


@dataclass
class OidcApp:
    url: str
    idp: str
    log: Path
    db: Path

    def sign_in_as(self, email: str, name: str) -> None:
        """Tell the identity provider who the next person to sign in is."""
        query = urllib.parse.urlencode({"email": email, "name": name})
        with urllib.request.urlopen(f"{self.idp}/mock/sign-in-as?{query}", timeout=5) as r:
            assert r.status == 200

    def audit(self, action: str) -> list[dict[str, str]]:
        """The audit rows with this action, through `python -m kapdata audit --out`."""
        out = self.db.parent / "audit.csv"
        cmd = [sys.executable, "-m", "kapdata", "audit", "--action", action, "--out", str(out)]
        done = subprocess.run([*cmd, "--db", str(self.db)], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        with out.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def log_tail(self) -> str:
        return "\n--- streamlit log (end) ---\n" + self.log.read_text(errors="replace")[-3000:]


def _start_idp(log: Path) -> tuple[subprocess.Popen[str], str]:
    """`node server.js 0`; returns the process and the issuer URL from its ready line."""
    if not (OIDC_DIR / "node_modules" / "oauth2-mock-server").is_dir():
        pytest.fail("oauth2-mock-server is missing: run scripts/test (or npm ci --prefix tests/e2e/oidc)")
    proc = subprocess.Popen(
        ["node", "server.js", "0"],
        cwd=OIDC_DIR,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=30)
    except queue.Empty:
        line = ""
    if not line.startswith("OIDC-MOCK READY "):
        proc.kill()
        pytest.fail("the OIDC test provider did not start:\n" + line + log.read_text(errors="replace"))
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _secrets_toml(port: int, idp: str) -> str:
    return (
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "kap-outcomes-e2e"\n'
        f'client_secret = "{secrets.token_hex(16)}"\n'
        f'server_metadata_url = "{idp}/.well-known/openid-configuration"\n'
    )


@pytest.fixture(scope="module")
def oidc_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcApp]:
    folder = tmp_path_factory.mktemp("oidc")
    db_file = folder / "kap.duckdb"
    ingest.load_files(sample.write_sample(40, folder / "csv", seed=11), db_file)
    add = [sys.executable, "-m", "kapdata", "users", "add", DIRECTOR, "--role", "director"]
    made = subprocess.run(
        [*add, "--db", str(db_file)], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert made.returncode == 0, "kapdata users add failed: " + made.stdout + made.stderr

    idp_proc, idp = _start_idp(folder / "idp.log")
    port = _free_port()
    secrets_file = folder / "secrets.toml"
    secrets_file.write_text(_secrets_toml(port, idp))
    log = folder / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port)]
    cmd += ["--server.headless", "true", "--server.address", "127.0.0.1"]
    cmd += ["--secrets.files", str(secrets_file)]  # only this file: the project's .streamlit/ is not read
    with log.open("w") as out:
        env = dict(os.environ, KAP_DB=str(db_file))
        app = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline or app.poll() is not None:
                _stop(app)
                _stop(idp_proc)
                pytest.fail("streamlit did not start:\n" + log.read_text(errors="replace"))
            time.sleep(0.3)
    yield OidcApp(url=url, idp=idp, log=log, db=db_file)
    _stop(app)
    _stop(idp_proc)


def _sign_in(page, oidc_app: OidcApp) -> None:
    page.goto(oidc_app.url)
    button = page.get_by_role("button", name="Sign in with your organisation")
    button.wait_for(timeout=30000)
    # Streamlit → the provider's /authorize → the app's /oauth2callback → back to the app.
    authorize = re.compile("^" + re.escape(oidc_app.idp) + "/authorize[?]")
    callback = re.compile("^" + re.escape(oidc_app.url) + "/oauth2callback[?]")
    with page.expect_response(callback, timeout=30000) as back, page.expect_request(authorize, timeout=30000):
        button.click()
    assert back.value.status in (302, 303, 307), back.value.status


def test_director_signs_in_with_the_organisation_and_sees_a_directors_navigation(page, oidc_app) -> None:
    oidc_app.sign_in_as(DIRECTOR, "Test Director")
    _sign_in(page, oidc_app)
    sidebar = page.locator('[data-testid="stSidebar"]')
    try:
        sidebar.get_by_text(f"Signed in as {DIRECTOR}").wait_for(timeout=30000)
    except Exception as e:  # the log says why the app did not sign in
        raise AssertionError(f"not signed in: {e}{oidc_app.log_tail()}") from None
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Clinic outcomes").wait_for(timeout=30000)
    assert nav.get_by_text("Patient trends").count() == 0, nav.inner_text()
    assert page.get_by_role("button", name="Sign in with your organisation").count() == 0
    nav.get_by_text("Clinic outcomes").click()  # the signed-in session opens a permitted page with its data
    page.locator('[data-testid="stMetric"]', has_text="Patients in cohort").first.wait_for(timeout=30000)
    signed_in = [r for r in oidc_app.audit("sign-in") if r["user"] == DIRECTOR]
    assert len(signed_in) == 1, signed_in
    assert signed_in[0]["role"] == "director" and "oidc" in signed_in[0]["detail"], signed_in[0]


def test_someone_without_an_account_signs_in_at_the_provider_but_is_not_permitted(page, oidc_app) -> None:
    oidc_app.sign_in_as(STRANGER, "Test Stranger")
    _sign_in(page, oidc_app)
    main = page.locator('[data-testid="stMain"]')
    try:
        main.get_by_text(re.compile("not permitted", re.IGNORECASE)).first.wait_for(timeout=30000)
    except Exception as e:
        raise AssertionError(f"no 'not permitted': {e}{oidc_app.log_tail()}") from None
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30000)
    # No page of the app, no data: no navigation entries, tables, charts, metrics or patient IDs.
    nav = page.locator('[data-testid="stSidebarNav"]')
    for label in PAGES:
        assert nav.get_by_text(label).count() == 0, label
    for data in ('[data-testid="stDataFrame"]', '[data-testid="stMetric"]', ".js-plotly-plot"):
        assert page.locator(data).count() == 0, data
    body = page.locator("body").inner_text()
    assert not PATIENT_ID.search(body), PATIENT_ID.search(body)
    assert not PATIENT_ID.search(page.url), page.url
    assert [r["user"] for r in oidc_app.audit("denied")].count(STRANGER) == 1
    assert all(r["user"] != STRANGER for r in oidc_app.audit("sign-in"))
