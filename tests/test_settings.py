"""Settings: one nested model, one set of defaults, and the environment names users already set."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.settings import (
    FLAT_FIELDS,
    SECTIONS,
    AsrSettings,
    Settings,
    default_settings,
    env_names,
    settings_error_text,
    settings_table,
)
from pipeline.speech_options import SpeechMetricsOptions
from pipeline.writer import WriterOptions


def test_the_environment_names_users_set_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCKAI_EMOTION_ENABLED", "false")
    monkeypatch.setenv("MOCKAI_ASR_MODEL", "base")
    monkeypatch.setenv("mockai_asr_hotwords", json.dumps(["ComfyUI", "Kubernetes"]))  # case-insensitive, JSON list
    monkeypatch.setenv("MONGODB_URI", "mongodb://db.example:27017/")
    monkeypatch.setenv("MOCKAI_MONGODB_URI", "mongodb://loses/")  # MONGODB_URI wins, as before
    monkeypatch.setenv("DEEPFACE_HOME", "/srv/deepface")
    monkeypatch.setenv("MOCKAI_BAND_CUTOFFS", "[0.3, 0.5, 0.7]")
    s = Settings()
    assert s.emotion.enabled is False and s.asr.model == "base"
    assert s.asr.hotwords == ("ComfyUI", "Kubernetes")
    assert s.storage.mongodb_uri == "mongodb://db.example:27017/"
    assert str(s.emotion.deepface_home) == "/srv/deepface"
    assert s.grading.band_cutoffs == (0.3, 0.5, 0.7)
    monkeypatch.setenv("MOCKAI_DEEPFACE_HOME", "/srv/mine")  # the prefixed name outranks DEEPFACE_HOME
    assert str(Settings().emotion.deepface_home) == "/srv/mine"


def test_keyword_arguments_take_flat_names_or_sections_and_outrank_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCKAI_ASR_THREADS", "2")
    s = Settings(asr_threads=1, asr_language="", grading={"grade_weight_similarity": 0.7})
    assert s.asr.threads == 1 and s.asr.language is None  # empty language: let the model detect it
    assert s.grading.weight_similarity == 0.7
    assert Settings(asr=AsrSettings(model="base")).asr.model == "base"
    with pytest.raises(ValidationError):
        Settings(asr_modle="base")  # a typo is refused, not ignored


def test_refusals_name_the_environment_variable_and_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCKAI_ASR_THREADS", "0")
    monkeypatch.setenv("MOCKAI_ADMIN_PASSWORD", "short-1")
    monkeypatch.setenv("MOCKAI_ASR_ENGINE", "whisper.cpp")
    with pytest.raises(ValidationError) as exc:
        Settings()
    text = settings_error_text(exc.value)
    assert "MOCKAI_ASR_THREADS" in text and "MOCKAI_ADMIN_PASSWORD" in text and "short-1" not in text
    assert "MOCKAI_ASR_ENGINE: unknown ASR engine" in text


def test_every_setting_has_one_flat_name_a_meaning_and_a_row() -> None:
    names = [info.alias for model in SECTIONS.values() for info in model.model_fields.values()]
    assert len(names) == len(set(names)) == len(FLAT_FIELDS)
    assert all(info.description for _, _, info in FLAT_FIELDS.values())
    rows = settings_table(default_settings())
    assert [r["setting"] for r in rows] == list(FLAT_FIELDS)
    assert env_names("mongodb_uri") == ("MONGODB_URI", "MOCKAI_MONGODB_URI")
    assert env_names("asr_model") == ("MOCKAI_ASR_MODEL",)


def test_with_values_validates_and_leaves_the_original_alone() -> None:
    base = default_settings()
    changed = base.with_values({"pause_seconds": 2.5, "asr_model": "base"})
    assert changed.speech.pause_seconds == 2.5 and changed.asr.model == "base"
    assert base.speech.pause_seconds == 1.0 and base.value("asr_model") == "tiny.en"
    with pytest.raises(ValidationError):
        base.with_values({"pause_seconds": -1})
    with pytest.raises(KeyError):
        base.with_values({"nope": 1})


def test_a_session_snapshot_is_flat_json_without_secrets_or_the_database_uri() -> None:
    s = Settings(admin_password="a-long-password", mongodb_uri="mongodb://user:pw@db/")
    snap = s.snapshot()
    assert "mongodb_uri" not in snap and "a-long-password" not in json.dumps(snap)
    assert snap["emotion_enabled"] is True and snap["band_cutoffs"] == [0.4, 0.6, 0.8]
    assert set(snap) == set(FLAT_FIELDS) - {"mongodb_uri", "redis_url"}


def test_option_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCKAI_PAUSE_SECONDS", "3")  # defaults never read the environment
    d = default_settings()
    assert SpeechMetricsOptions().pause_seconds == d.speech.pause_seconds == 1.0
    assert SpeechMetricsOptions().filler_words == d.speech.filler_words
    assert WriterOptions(journal_dir=d.storage.data_dir).flush_seconds == d.storage.flush_seconds
    assert SpeechMetricsOptions.from_settings(Settings()).pause_seconds == 3.0
