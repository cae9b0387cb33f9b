"""The sidebar what-if (AppTest, real database): a slider changes the report's and the sessions list's
grade, band and covered key points, writes nothing, and reset restores them; candidates and coaches
see no panel."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from pipeline import auth
from pipeline.settings import get_settings
from tests.pages_support import open_page, page_database
from tests.test_rescore import store_session

SLIDER = "wi_thr_keypoint_match_threshold"


@pytest.fixture
def page_db(mongo_uri, tmp_path, monkeypatch):
    yield from page_database(mongo_uri, tmp_path, monkeypatch, "test_whatif")


def _token(db, username: str, role: str) -> str:
    user = auth.create_user(db, username, "test-pass-123", role)
    return auth.start_login(db, user, get_settings())


def _seed(db) -> None:
    store_session(db, "s1", [0.45, 0.5])
    db.sessions.update_one({"_id": "s1"}, {"$set": {"coach": "res1", "candidate_user": "cand1"}})


def _snapshot(db) -> dict[str, list]:
    return {name: sorted(db[name].find({}), key=lambda d: str(d["_id"]))
            for name in sorted(db.list_collection_names()) if name not in ("logins",)}


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _report_view(at: AppTest) -> tuple[str, str, int]:
    overall = next(m for m in at.metric if m.label.startswith("Overall grade"))
    covered = sum(int((df.value["covered"] == "✓ covered").sum()) for df in at.dataframe if "covered" in df.value)
    return overall.label, overall.value, covered


def test_report_whatif_changes_grade_band_and_key_points_writes_nothing_and_resets(page_db):
    _seed(page_db)
    token = _token(page_db, "res1", "researcher")
    at = open_page("pages/report.py", token, session="s1")
    before = _report_view(at)
    assert at.slider(key=SLIDER).value == pytest.approx(0.5)
    stored = _snapshot(page_db)
    _ok(at.slider(key=SLIDER).set_value(0.05).run())
    after = _report_view(at)
    assert after[1] != before[1] and after[0] != before[0], (before, after)  # grade and band
    assert after[2] > before[2]  # more key points covered
    assert any("what-if: not saved" in str(b.proto) for b in at.get("badge")) or any(
        "not saved" in w.value for w in at.warning)
    assert any("newly covered" in w.value for w in at.warning)
    assert _snapshot(page_db) == stored  # nothing written to MongoDB
    _ok(at.button(key="wi_reset_button").click().run())
    assert _report_view(at) == before
    assert at.slider(key=SLIDER).value == pytest.approx(0.5)
    assert _snapshot(page_db) == stored


def test_sessions_list_whatif_changes_grade_and_band_writes_nothing_and_resets(page_db):
    _seed(page_db)
    token = _token(page_db, "res1", "researcher")
    at = open_page("pages/sessions.py", token)
    table = at.dataframe[0].value
    before = (float(table["grade"][0]), table["band"][0])
    stored = _snapshot(page_db)
    _ok(at.slider(key=SLIDER).set_value(0.05).run())
    table = at.dataframe[0].value
    after = (float(table["grade"][0]), table["band"][0])
    assert after[0] > before[0] and after[1] != before[1], (before, after)
    assert "newly covered" in table["what-if"][0]
    assert _snapshot(page_db) == stored
    _ok(at.button(key="wi_reset_button").click().run())
    table = at.dataframe[0].value
    assert (float(table["grade"][0]), table["band"][0]) == before and "what-if" not in table
    assert _snapshot(page_db) == stored


@pytest.mark.parametrize("role", ["candidate", "coach"])
def test_candidates_and_coaches_see_no_panel(page_db, role):
    _seed(page_db)
    name = "cand1" if role == "candidate" else "res1"
    token = _token(page_db, name, role)
    for page, query in (("pages/report.py", {"session": "s1"}), ("pages/sessions.py", {})):
        at = open_page(page, token, **query)
        assert not at.slider, page
        assert not any(str(w.key or "").startswith("wi_") for w in [*at.button, *at.number_input, *at.text_input])
        assert not any("Thresholds (what-if)" in s.value for s in at.sidebar.subheader)
        assert at.metric or at.dataframe  # the page itself is shown


def test_preview_hands_the_sidebar_values_to_the_research_page(page_db):
    _seed(page_db)
    token = _token(page_db, "res1", "researcher")
    at = open_page("pages/report.py", token, session="s1")
    _ok(at.slider(key=SLIDER).set_value(0.05).run())
    _ok(at.button(key="wi_preview_button").click().run())
    assert at.number_input(key="thr_keypoint_match_threshold").value == pytest.approx(0.05)
    assert any(m.label == "Answers re-scored" and m.value == "2" for m in at.metric)
    assert page_db.answer_scores.count_documents({}) == 0 and page_db.profiles.count_documents({}) == 0
