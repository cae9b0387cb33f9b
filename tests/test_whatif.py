"""pipeline.whatif: stored answers re-scored in memory under a threshold set; nothing modified."""

from __future__ import annotations

import copy

import pytest

from pipeline.grading_score import GradeOptions
from pipeline.profiles import ProfileError, settings_with
from pipeline.settings import Settings
from pipeline.whatif import (
    GradeChange,
    changed_values,
    regrade_answer,
    whatif_report_options,
    whatif_session,
)
from tests.test_rescore import features, score

BASE = Settings()


def _answer(q: float, i: int = 0) -> dict:
    f = features(q)
    return {"_id": f"a{i}", "session_id": "s", "index": i, "features": f.to_dict(),
            "grade": score(f, GradeOptions.from_settings(BASE)).to_dict()}


def test_lower_keypoint_threshold_covers_more_and_raises_the_grade():
    answers = [_answer(0.45, 0), _answer(0.5, 1)]
    session = {"_id": "s", "grade": sum(a["grade"]["score"] for a in answers) / 2, "band": "fair", "flags": []}
    frozen = copy.deepcopy((session, answers))
    low = settings_with(BASE, {"keypoint_match_threshold": 0.05})
    result = whatif_session(session, answers, low)
    assert (session, answers) == frozen  # the loaded documents are not modified
    assert result.change.after > result.change.before
    assert result.change.newly_covered > 0 and result.change.newly_missed == 0
    assert all(len(a["grade"]["missed"]) == 0 for a in result.answers)
    text = result.change.text()
    assert text.startswith(f"grade {result.change.before:.2f} → {result.change.after:.2f}")
    assert f"{result.change.newly_covered} key points newly covered" in text


def test_same_thresholds_change_nothing():
    answers = [_answer(0.6)]
    result = whatif_session({"grade": answers[0]["grade"]["score"], "band": answers[0]["grade"]["band"]}, answers, BASE)
    assert not result.change.changed and result.change.text() == "no change"


def test_answer_without_features_keeps_its_grade():
    doc, change = regrade_answer({"grade": {"score": 0.5, "band": "fair"}}, GradeOptions())
    assert doc["grade"] == {"score": 0.5, "band": "fair"} and not change.changed


def test_diff_text_names_band_change():
    assert GradeChange(0.62, 0.71, "fair", "good", 2).text() == "grade 0.62 → 0.71, band fair → good, 2 key points newly covered"
    assert GradeChange(0.5, 0.5, "fair", "fair", 0, 1).text() == "1 key point newly missed"


def test_report_options_follow_the_whatif():
    s = settings_with(BASE, {"pause_seconds": 2.5, "eye_contact_good": 0.9})
    opts = whatif_report_options(s, {"emotion_enabled": True}, emotion_enabled=False)
    assert opts.pause_seconds == 2.5 and opts.eye_contact_good == 0.9 and not opts.emotion_enabled


def test_changed_values_and_refusal():
    assert changed_values(BASE, {"pause_seconds": 1.0, "band_cutoffs": (0.4, 0.6, 0.8), "min_answer_words": 3}) == {
        "min_answer_words": 3}
    with pytest.raises(ProfileError, match="pace_low_wpm"):
        settings_with(BASE, {"pace_low_wpm": 300.0})


def test_researcher_has_a_coachs_access_rule():
    from pipeline import auth

    assert "researcher" in auth.ROLES and "researcher" in auth.ASSIGNEE_ROLES
    res = {"role": "researcher", "username": "res1"}
    assert auth.session_access_filter(res) == {"$or": [{"coach": "res1"}, {"candidate_user": {"$in": []}}]}
    assert auth.can_view_session(res, {"coach": "res1"}) and not auth.can_view_session(res, {"coach": "other"})
