"""Research page (AppTest, real database): preview a re-score, save and load profiles, apply one."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.profiles import list_profiles
from pipeline.queries import list_answers
from pipeline.safe_text import md
from tests.pages_support import admin_token, open_page, page_database
from tests.test_rescore import store_session


@pytest.fixture
def page_db(mongo_uri, tmp_path, monkeypatch):
    yield from page_database(mongo_uri, tmp_path, monkeypatch, "test_research")



def _open() -> AppTest:
    return open_page("pages/research.py", admin_token())


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_preview_shows_the_effect_of_new_cutoffs(page_db):
    store_session(page_db, "s1", [0.2, 0.5, 0.8])
    store_session(page_db, "s2", [0.35, 0.65, 0.95], minutes=1)
    at = _open()
    assert at.number_input(key="thr_band_cutoffs_0").value == pytest.approx(0.4)
    assert any("Words and phrases counted as fillers" in (t.help or "") for t in at.text_area)
    for i, v in enumerate((0.7, 0.85, 0.95)):
        at.number_input(key=f"thr_band_cutoffs_{i}").set_value(v)
    _ok(at.button(key="preview").click().run())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Answers re-scored"] == "6"
    assert int(metrics["Answers changing band"]) > 0
    assert at.get("plotly_chart"), "grade distributions before/after"
    table = at.dataframe[0].value
    assert list(table.columns)[:3] == ["before \\ after", "weak", "fair"] and int(table.iloc[:, 1:].to_numpy().sum()) == 6
    # Nothing was written by a preview.
    assert page_db.answer_scores.count_documents({}) == 0


def test_invalid_value_is_refused_with_the_field_named(page_db):
    at = _open()
    at.number_input(key="thr_pace_low_wpm").set_value(200.0)  # above pace_high_wpm (170)
    at.text_input(key="profile_name").input("bad")
    _ok(at.button(key="save").click().run())
    assert any(md("pace_low_wpm") in e.value for e in at.error)  # shown escaped
    assert list_profiles(page_db) == []


def test_save_load_and_apply_profile(page_db):
    store_session(page_db, "s1", [0.3, 0.6, 0.9])
    at = _open()
    at.number_input(key="thr_min_answer_words").set_value(12)
    at.text_area(key="thr_filler_words").input("um, uh, so")
    at.text_input(key="profile_name").input("tighter")
    at.text_input(key="profile_author").input("ada")
    _ok(at.button(key="save").click().run())
    assert any("version 1" in s.value for s in at.success)
    _ok(at.button(key="save").click().run())
    assert any("version 2" in s.value for s in at.success)
    saved = list_profiles(page_db)
    assert [(p["name"], p["version"]) for p in saved] == [("tighter", 2), ("tighter", 1)]
    assert saved[0]["thresholds"]["filler_words"] == ["um", "uh", "so"] and saved[0]["author"] == "ada"

    # Reset, then load the saved profile back into the form.
    _ok(at.button(key="profile_reset").click().run())
    assert at.number_input(key="thr_min_answer_words").value == 8
    at.selectbox(key="profile_pick").select("tighter v1")
    _ok(at.button(key="profile_load").click().run())
    assert at.number_input(key="thr_min_answer_words").value == 12
    assert at.text_area(key="thr_filler_words").value == "um, uh, so"

    # Apply it to the stored sessions.
    at.selectbox(key="apply_pick").select("tighter v1")
    at.checkbox(key="apply_confirm").check()
    _ok(at.run())
    _ok(at.button(key="apply").click().run())
    assert any("Applied tighter v1" in s.value for s in at.success)
    assert page_db.sessions.find_one({"_id": "s1"})["profile"] == {"name": "tighter", "version": 1}
    assert page_db.answer_scores.count_documents({"profile.name": "tighter"}) == 3
    answers = list_answers(page_db, "s1")
    assert answers[0]["profile"]["name"] == "tighter" and answers[0]["metrics"]["filler_counts"].get("so") == 2


def test_calibration_tab(page_db):
    store_session(page_db, "s1", [0.3, 0.6, 0.9])
    store_session(page_db, "s2", [0.2, 0.4], minutes=1)
    at = _open()
    _ok(at.button(key="cal_compute").click().run())
    table = at.dataframe[-1].value
    assert "Pace (words per minute)" in set(table["metric"])
