"""Phases of care (DESIGN §4): preparation → dosing → integration → follow-up.

An explicit ``phase`` on a score wins. Otherwise, from the patient's dosing sessions: on or before the first
session date → preparation (a questionnaire on the first-dose day is a baseline); after the first and on or
before the last session → dosing; up to ``integration_window_days`` (a setting, default 84) after the last
session → integration; later → follow-up. A patient with no sessions is in preparation.

The rule is SQL, in the views below (created by ``db.ensure_schema``), so every page, the command line and
the exports assign phases the same way.
"""

from __future__ import annotations

PHASES: tuple[str, ...] = ("preparation", "dosing", "integration", "follow-up")
#: The phases an outcome is read at: each phase's last score, and ``latest`` (the last score after baseline).
ENDPOINT_PHASES: tuple[str, ...] = ("dosing", "integration", "follow-up", "latest")
#: A last dosing session this recent (days) means dosing is still under way: the patient's current phase on a
#: day (caseload) and whether they are due for an integration endpoint (intention-to-treat) follow it.
DOSING_ACTIVE_DAYS = 14

PHASE_VIEWS_SQL: tuple[str, ...] = (
    # Per-patient dosing span.
    """CREATE OR REPLACE VIEW patient_dosing AS
    SELECT patient_id, min(session_date) AS first_session, max(session_date) AS last_session,
           count(*) AS n_sessions
    FROM sessions GROUP BY patient_id""",
    # Every score with its phase (DESIGN §4): explicit phase wins, else derived from the sessions.
    """CREATE OR REPLACE VIEW scores_phased AS
    WITH w AS (SELECT CAST(value AS INTEGER) AS days FROM settings WHERE key = 'integration_window_days')
    SELECT s.patient_id, s.instrument, s.assessed_on, s.assessed_at, s.total, s.items, s.prorated,
           s.batch_id,
           coalesce(s.phase, CASE
               WHEN d.first_session IS NULL OR s.assessed_on <= d.first_session THEN 'preparation'
               WHEN s.assessed_on <= d.last_session THEN 'dosing'
               WHEN s.assessed_on <= d.last_session + (SELECT days FROM w) THEN 'integration'
               ELSE 'follow-up' END) AS phase,
           s.phase IS NOT NULL AS phase_explicit,
           CAST(s.assessed_on - d.first_session AS INTEGER) AS day,
           -- Safety flag: an answer > 0 on a safety item (PHQ-9 item 9); unknown (NULL) when the item was
           -- not answered (a total only, or a prorated total without it): never 0, never prorated.
           CASE WHEN len(i.safety_items) = 0 THEN false
                WHEN s.items IS NULL THEN NULL
                WHEN len(list_filter(i.safety_items, lambda k: s.items[k] > 0)) > 0 THEN true
                WHEN len(list_filter(i.safety_items, lambda k: s.items[k] IS NULL)) > 0 THEN NULL
                ELSE false
           END AS safety_flag
    FROM scores s LEFT JOIN patient_dosing d USING (patient_id)
    LEFT JOIN instruments i ON i.code = s.instrument""",
)
