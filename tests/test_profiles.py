"""Threshold profiles: validation through the Settings model, versioned saves, loading."""

from __future__ import annotations

import pytest

from pipeline.profiles import (
    THRESHOLD_FIELDS,
    ProfileError,
    list_profiles,
    load_profile,
    parse_words,
    save_profile,
    settings_with,
    threshold_specs,
    validate_thresholds,
)
from pipeline.settings import Settings, setting_field


def test_every_threshold_is_a_described_setting():
    assert len(set(THRESHOLD_FIELDS)) == len(THRESHOLD_FIELDS) == 18
    for name in THRESHOLD_FIELDS:
        assert setting_field(name).description
    specs = threshold_specs(Settings())
    assert [s.name for s in specs] == list(THRESHOLD_FIELDS)
    assert {s.kind for s in specs} == {"int", "float", "words", "cutoffs"}
    assert next(s for s in specs if s.name == "frame_sample_every").max_value == 60


@pytest.mark.parametrize(
    "thresholds, field",
    [
        ({"frame_sample_every": 0}, "frame_sample_every"),
        ({"keypoint_match_threshold": 1.5}, "keypoint_match_threshold"),
        ({"pause_seconds": -1}, "pause_seconds"),
        ({"min_answer_words": "many"}, "min_answer_words"),
        ({"min_answer_words": True}, "min_answer_words"),
        ({"band_cutoffs": [0.8, 0.6, 0.4]}, "band_cutoffs"),
        ({"band_cutoffs": [0.2, 0.4]}, "band_cutoffs"),
        ({"pace_low_wpm": 180.0}, "pace_low_wpm"),
        ({"grade_weight_similarity": 0, "grade_weight_coverage": 0}, "grade_weight_similarity"),
        ({"filler_words": ["x" * 41]}, "filler_words"),
        ({"db_name": "other"}, "db_name"),
        ({"asr_model": "base"}, "asr_model"),
    ],
)
def test_bad_values_are_refused_naming_the_field(db, thresholds, field):
    with pytest.raises(ProfileError, match=field):
        validate_thresholds(thresholds)
    with pytest.raises(ProfileError, match=field):
        save_profile(db, "bad", thresholds, "ada")
    assert db.profiles.count_documents({}) == 0


def test_values_are_typed_and_cleaned():
    out = validate_thresholds({"frame_sample_every": "6", "band_cutoffs": [0.3, 0.5, 0.7],
                               "filler_words": [" Um", "you   know", "um", ""]})
    assert out == {"frame_sample_every": 6, "band_cutoffs": (0.3, 0.5, 0.7), "filler_words": ("um", "you know")}
    assert parse_words("um, uh,\nyou know, ") == ("um", "uh", "you know")


def test_settings_with_applies_thresholds_and_keeps_the_rest():
    base = Settings(mongodb_uri=None, db_name="keep")
    new = settings_with(base, {"band_cutoffs": [0.5, 0.7, 0.9], "filler_words": ["um"], "pause_seconds": 2})
    assert new.grading.band_cutoffs == (0.5, 0.7, 0.9) and new.speech.filler_words == ("um",) and new.speech.pause_seconds == 2.0
    assert new.storage.db_name == "keep" and base.grading.band_cutoffs == (0.4, 0.6, 0.8)
    # Cross-field checks use the settings being changed: 180 is fine below a raised fast pace.
    assert settings_with(settings_with(base, {"pace_high_wpm": 200.0}), {"pace_low_wpm": 180.0}).speech.pace_low_wpm == 180.0
    with pytest.raises(ProfileError, match="pace_low_wpm"):
        settings_with(base, {"pace_low_wpm": 180.0})


def test_each_save_is_a_new_version(db):
    assert save_profile(db, "strict", {"band_cutoffs": [0.5, 0.7, 0.9]}, "ada") == 1
    assert save_profile(db, " strict ", {"band_cutoffs": [0.6, 0.75, 0.9]}, "ada") == 2
    assert save_profile(db, "loose", {"min_answer_words": 4}, None) == 1

    latest = load_profile(db, "strict")
    assert latest["version"] == 2 and latest["thresholds"] == {"band_cutoffs": (0.6, 0.75, 0.9)}
    assert latest["author"] == "ada" and latest["created_at"] is not None
    assert load_profile(db, "strict", 1)["thresholds"]["band_cutoffs"] == (0.5, 0.7, 0.9)
    assert load_profile(db, "strict", 3) is None and load_profile(db, "nope") is None
    assert [(p["name"], p["version"]) for p in list_profiles(db)] == [("loose", 1), ("strict", 2), ("strict", 1)]
    # Versions are never overwritten: the unique (name, version) index holds them apart.
    assert db.profiles.count_documents({"name": "strict"}) == 2


def test_name_and_empty_profiles_refused(db):
    with pytest.raises(ProfileError, match="name"):
        save_profile(db, "  ", {"min_answer_words": 4})
    with pytest.raises(ProfileError, match="name"):
        save_profile(db, "x" * 101, {"min_answer_words": 4})
    with pytest.raises(ProfileError, match="at least one"):
        save_profile(db, "empty", {})
    assert db.profiles.count_documents({}) == 0
