"""Re-scoring stored sessions without any model, the Mohler effect, and the calibration view."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymongo.database import Database

from pipeline import encoder as encoder_module
from pipeline.calibration import calibration_view, pipeline
from pipeline.grading_features import GradeFeatures, KeyPointEvidence
from pipeline.grading_score import GradeOptions, default_calibration, score
from pipeline.profiles import load_profile, save_profile, settings_with
from pipeline.queries import list_report_answers, with_rescores
from pipeline.rescore import BAND_LABELS, mohler_cache_path, mohler_effect, rescore, write_mohler_cache
from pipeline.settings import Settings
from pipeline.speech_metrics import SpeechMetricsOptions, compute_speech_metrics
from pipeline.writer import BatchedWriter, WriterOptions

T0 = datetime(2025, 11, 1, 9, 0, tzinfo=UTC)
BASE = Settings(mongodb_uri=None)
ANSWER_TEXT = ["so", "um", "a", "hash", "table", "stores", "key", "value", "pairs", "in", "buckets", "and", "uh", "a", "hash", "function", "maps", "each", "key", "to", "a", "bucket", "so", "lookups", "are", "fast", "on", "average", "and", "collisions", "are", "handled", "by", "chaining", "or", "open", "addressing"]


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """Re-scoring must never load or call the sentence model."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the sentence encoder was used while re-scoring")

    monkeypatch.setattr(encoder_module.SentenceEncoder, "__init__", refuse)
    monkeypatch.setattr(encoder_module.SentenceEncoder, "encode", refuse)


def timed(words: list[str], start: float = 0.5, step: float = 0.4, gap_every: int = 9, gap: float = 1.6):
    out, t = [], start
    for i, w in enumerate(words):
        out.append({"word": w, "start": round(t, 3), "end": round(t + 0.3, 3), "probability": 0.9,
                    "t_ms": 1_760_000_000_000 + int(t * 1000), "end_ms": 1_760_000_000_000 + int((t + 0.3) * 1000)})
        t += step + (gap if (i + 1) % gap_every == 0 else 0.0)
    return out


def features(quality: float, n_words: int = 30, author: bool = True, no_speech: bool = False) -> GradeFeatures:
    """Features shaped like extract_features' output, through grading's public records only."""
    cal = default_calibration()
    values = {name: float(lo + quality * (hi - lo)) for name, lo, hi in zip(cal.features, cal.lo, cal.hi, strict=True)}
    values.update({"cos_question": 0.3 + 0.3 * quality, "log_words": math.log1p(n_words)})
    kps = [
        KeyPointEvidence(f"key point {k}", min(1.0, quality + 0.1 * k - 0.1), "a hash table stores key value pairs",
                         1.0 + k, 3.0 + k, 2 + k, 9 + k)
        for k in range(4)
    ]
    if no_speech:
        return GradeFeatures(True, 0, {}, [KeyPointEvidence(k.key_point, None, None, None, None) for k in kps],
                             "author", model_id="test")
    return GradeFeatures(False, n_words, values, kps, "author" if author else "reference", model_id="test")


@pytest.fixture
def writer(db: Database, tmp_path: Path) -> Iterator[BatchedWriter]:
    """The journaled writer every re-score writes through (as the app's Store gives the pages)."""
    w = BatchedWriter(lambda: db, WriterOptions(journal_dir=tmp_path / "journal", flush_seconds=3600))
    yield w
    w.close()


def store_session(db, sid: str, qualities: list[float | None], settings: Settings = BASE, minutes: int = 0,
                  role: str = "software") -> None:
    """A session as the sidecar stores it: answers with words, metrics, grade and features."""
    opts = GradeOptions.from_settings(settings)
    speech = SpeechMetricsOptions.from_settings(settings)
    answers, scores, flags = [], [], set()
    for i, q in enumerate(qualities):
        words = timed(ANSWER_TEXT)
        metrics = compute_speech_metrics(words, options=speech).as_dict()
        metrics["prosody"] = {"pitch_median_hz": 120.0, "voiced_fraction": 0.6}  # stored once, never recomputed
        doc: dict[str, Any] = {"_id": f"{sid}-a{i}", "session_id": sid, "index": i, "question": "What is a hash table?",
                               "reference": "A hash table maps keys to buckets.", "key_points": [],
                               "status": "complete", "words": words, "transcript": " ".join(ANSWER_TEXT),
                               "metrics": metrics}
        if q is not None:
            f = features(q)
            g = score(f, opts)
            doc.update({"features": f.to_dict(), "grade": g.to_dict()})
            scores.append(g.score)
            flags.update(g.flags)
        answers.append(doc)
    mean = sum(scores) / len(scores) if scores else None
    from pipeline.grading_score import band_for

    db.sessions.insert_one({
        "_id": sid, "candidate": f"Candidate {sid}", "role": role, "status": "analysed",
        "started_at": T0 + timedelta(minutes=minutes), "settings": settings.snapshot(),
        "grade": mean, "band": band_for(mean, settings.grading.band_cutoffs) if mean is not None else None,
        "flags": sorted(flags),
    })
    db.answers.insert_many(answers)


def scored(db, query: dict | None = None) -> list[dict]:
    """Answers as the pages see them: the stored documents with their re-scores applied."""
    return with_rescores(db, list(db.answers.find(query or {}).sort([("session_id", 1), ("index", 1)])))


def scored_one(db, answer_id: str) -> dict:
    return scored(db, {"_id": answer_id})[0]


def test_band_cutoffs_change_bands_without_any_model(db):
    store_session(db, "s1", [0.2, 0.5, 0.8])
    store_session(db, "s2", [0.35, 0.65, 0.95], minutes=1)
    stored = {a["_id"]: a["grade"] for a in db.answers.find({}, {"grade": 1})}
    strict = settings_with(BASE, {"band_cutoffs": (0.7, 0.85, 0.95)})

    result = rescore(db, strict)

    assert result.sessions == 2 and result.answers == result.rescored == 6 and result.skipped == 0
    assert result.before == pytest.approx(result.after)  # cut-offs move bands, not scores
    changed = sum(1 for a in db.answers.find() if a["grade"]["band"] != score(a["features"], GradeOptions.from_settings(strict)).band)
    assert result.band_changes == changed > 0
    assert sum(sum(row.values()) for row in result.transitions.values()) == 6
    assert set(result.transitions) == set(BAND_LABELS)
    # Stricter cut-offs only ever move answers down.
    order = {b: i for i, b in enumerate(BAND_LABELS[:-1])}
    for b0, row in result.transitions.items():
        for b1, n in row.items():
            if n and b0 != "none":
                assert order[b1] <= order[b0]
    assert result.session_band_changes >= 1
    assert not result.written and result.speech == {"fillers": 0, "pauses": 0, "pace_band": 0, "errors": 0}
    # Preview wrote nothing.
    assert {a["_id"]: a["grade"] for a in db.answers.find({}, {"grade": 1})} == stored
    assert db.sessions.count_documents({"profile": {"$exists": True}}) == 0


def test_apply_profile_writes_grades_and_profile(db, writer):
    store_session(db, "s1", [0.2, 0.5, 0.8])
    store_session(db, "s2", [0.3, None], minutes=1)  # one answer was never graded (no features)
    version = save_profile(db, "strict", {"band_cutoffs": [0.7, 0.85, 0.95], "off_topic_similarity": 0.2}, "ada")
    prof = load_profile(db, "strict")
    new = settings_with(BASE, prof["thresholds"])

    stored = list(db.answers.find().sort("_id", 1))
    result = rescore(db, new, write=True, profile=(prof["name"], prof["version"]), writer=writer)

    assert result.written and result.rescored == 4 and result.skipped == 1
    assert list(db.answers.find().sort("_id", 1)) == stored  # the answers themselves are never rewritten
    assert db.answer_scores.count_documents({}) == 4
    opts = GradeOptions.from_settings(new)
    for a in scored(db):
        if "features" not in a:
            assert "profile" not in a and "grade" not in a  # left exactly as stored
            continue
        assert a["profile"] == {"name": "strict", "version": version}
        expected = score(a["features"], opts)
        assert a["grade"]["band"] == expected.band and a["grade"]["score"] == pytest.approx(expected.score)
        assert a["metrics"]["prosody"] == {"pitch_median_hz": 120.0, "voiced_fraction": 0.6}
    for s in db.sessions.find():
        graded = [a["grade"]["score"] for a in scored(db, {"session_id": s["_id"], "grade": {"$exists": True}})]
        assert s["grade"] == pytest.approx(sum(graded) / len(graded))
        assert s["profile"] == {"name": "strict", "version": version}
        assert s["band"] == ("weak" if s["grade"] < 0.7 else "fair" if s["grade"] < 0.85 else "good"
                             if s["grade"] < 0.95 else "strong")
        assert s["scored_thresholds"]["band_cutoffs"] == [0.7, 0.85, 0.95]
    # The same thresholds again: nothing changes band any more.
    again = rescore(db, new)
    assert again.band_changes == 0 and again.session_band_changes == 0


def test_speech_metrics_recomputed_from_stored_words(db, writer):
    store_session(db, "s1", [0.5, 0.6])
    before = db.answers.find_one({"_id": "s1-a0"})
    assert before["metrics"]["filler_count"] == 2  # um, uh
    new = settings_with(BASE, {
        "filler_words": ["um", "uh", "so"], "pause_seconds": 2.5, "pace_low_wpm": 50.0, "pace_high_wpm": 90.0,
    })

    result = rescore(db, new, write=True, profile=("speech", 1), writer=writer)

    assert result.speech == {"fillers": 2, "pauses": 2, "pace_band": 2, "errors": 0}
    after = scored_one(db, "s1-a0")
    m = after["metrics"]
    assert m["filler_count"] == 4 and m["filler_counts"] == {"um": 1, "uh": 1, "so": 2}
    assert before["metrics"]["pauses"] and not m["pauses"] and m["longest_pause_s"] is None  # gaps are 1.7 s
    assert before["metrics"]["pace_band"] == "slow" and m["pace_band"] == "fast" and 90 < m["wpm"] < 110
    assert m["wpm"] == before["metrics"]["wpm"] and m["pace_track"] == before["metrics"]["pace_track"]
    assert m["prosody"] == before["metrics"]["prosody"] and after["words"] == before["words"]
    # The session now records what its metrics were computed with: no recomputation next time.
    assert rescore(db, new).speech == {"fillers": 0, "pauses": 0, "pace_band": 0, "errors": 0}


def test_rescore_is_what_every_reader_sees_and_later_rescores_build_on_it(db, writer):
    from pipeline.export import delete_session
    from pipeline.progress import answer_rows

    store_session(db, "s1", [0.4, 0.6, 0.8])
    fillers = settings_with(BASE, {"filler_words": ["um", "uh", "so"]})
    rescore(db, fillers, write=True, profile=("fillers", 1), writer=writer)
    # Second profile changes only the pause length: the first one's filler counts stay.
    both = settings_with(fillers, {"pause_seconds": 2.5, "band_cutoffs": (0.7, 0.85, 0.95)})
    second = rescore(db, both, write=True, profile=("pauses", 1), writer=writer)
    assert second.speech["fillers"] == 0 and second.speech["pauses"] == 3
    assert second.band_changes > 0  # "before" is the first re-score's bands, not the stored ones

    report = list_report_answers(db, "s1")
    opts = GradeOptions.from_settings(both)
    for a in report:
        assert a["profile"] == {"name": "pauses", "version": 1}
        assert a["grade"]["band"] == score(a["features"], opts).band
        assert a["metrics"]["filler_counts"].get("so") == 2 and a["metrics"]["pauses"] == []
        assert a["metrics"]["prosody"] == {"pitch_median_hz": 120.0, "voiced_fraction": 0.6}
    rows = {r["_id"]: r for r in answer_rows(db, ["s1"])}
    assert rows["s1-a0"]["grade"] == pytest.approx(report[0]["grade"]["score"])
    assert rows["s1-a0"]["fillers_per_minute"] == pytest.approx(report[0]["metrics"]["fillers_per_minute"])
    view = calibration_view(db, level="answer")
    assert view.metrics["pauses"].values == [0.0, 0.0, 0.0]
    assert sorted(view.metrics["grade"].values) == pytest.approx(sorted(a["grade"]["score"] for a in report))

    deleted = delete_session(db, "s1", writer)
    assert deleted is not None
    assert deleted["answer_scores"] == 3 and db.answer_scores.count_documents({}) == 0


def test_rescore_writes_only_through_the_writer_and_never_revives_a_deleted_session(db, tmp_path):
    from pipeline.export import delete_session
    from pipeline.writer import BatchedWriter, WriterOptions

    store_session(db, "s1", [0.4, 0.6, 0.8])
    store_session(db, "s2", [0.5, 0.7], minutes=5)
    new = settings_with(BASE, {"filler_words": ["um", "uh", "so"], "band_cutoffs": (0.7, 0.85, 0.95)})
    w = BatchedWriter(lambda: db, WriterOptions(journal_dir=tmp_path / "j", flush_seconds=3600))
    try:
        journaled = rescore(db, new, write=True, profile=("p", 1), writer=w)
        assert journaled.written and not journaled.pending and journaled.rescored == 5
        assert w.status().pending_ops == 0  # flushed: the caller reads what it wrote
        scores = {d["_id"]: {k: v for k, v in d.items() if k != "rescored_at"} for d in db.answer_scores.find()}
        sessions = {d["_id"]: (d["grade"], d["band"], d["flags"], d["profile"]) for d in db.sessions.find()}
        assert len(scores) == 5 and all(s["profile"] == {"name": "p", "version": 1} for s in scores.values())
        assert {sid: row[3] for sid, row in sessions.items()} == {"s1": {"name": "p", "version": 1},
                                                                  "s2": {"name": "p", "version": 1}}
        with pytest.raises(ValueError, match="writer"):  # no direct write: it could race a delete
            rescore(db, new, write=True, profile=("p", 1))

        # A re-score journaled around a delete never brings the deleted session's grades back.
        w.delete_session("s2")
        rescore(db, settings_with(new, {"band_cutoffs": (0.3, 0.5, 0.9)}), write=True, profile=("p", 2), writer=w)
        assert delete_session(db, "s2", w) is not None
        assert db.answer_scores.count_documents({"session_id": "s2"}) == 0 and db.sessions.find_one({"_id": "s2"}) is None
        assert db.answer_scores.count_documents({"session_id": "s1", "profile.version": 2}) == 3
    finally:
        w.close()


def test_no_speech_answer_has_no_grade_before_or_after(db, writer):
    store_session(db, "s1", [0.5])
    f = features(0.0, no_speech=True)
    db.answers.insert_one({"_id": "s1-a9", "session_id": "s1", "index": 9, "question": "q", "status": "complete",
                           "words": [], "metrics": {"has_speech": False}, "features": f.to_dict(),
                           "grade": score(f).to_dict()})
    result = rescore(db, settings_with(BASE, {"band_cutoffs": [0.1, 0.2, 0.3]}), write=True, profile=("p", 1), writer=writer)
    assert result.transitions["none"]["none"] == 1
    assert None in result.before and None in result.after
    a = scored_one(db, "s1-a9")
    assert a["grade"]["score"] is None and a["grade"]["band"] is None and "no_speech" in a["grade"]["flags"]
    assert db.sessions.find_one({"_id": "s1"})["grade"] == pytest.approx(scored_one(db, "s1-a0")["grade"]["score"])


def test_session_filter_and_limit(db, writer):
    for i in range(6):
        store_session(db, f"s{i}", [0.2 + 0.1 * i], minutes=i, role="software" if i % 2 else "sales")
    assert rescore(db, BASE, session_filter={"role": "sales"}).sessions == 3
    newest = rescore(db, BASE, limit=2, write=True, profile=("p", 1), writer=writer)
    assert newest.sessions == 2 and newest.answers == 2
    assert sorted(s["_id"] for s in db.sessions.find({"profile": {"$exists": True}})) == ["s4", "s5"]
    one = rescore(db, BASE, session_filter={"_id": "s1"}, limit=5)
    assert one.sessions == 1 and one.answers == 1


@pytest.mark.slow
def test_real_encoder_features_rescored_without_the_encoder(db, writer, monkeypatch):
    """Features from the real model are stored; re-scoring them never touches the model again."""
    monkeypatch.undo()  # this test needs the real encoder to make the features first
    from pipeline.encoder import SentenceEncoder
    from pipeline.grading import extract_features
    from tests.test_grading import GOOD, KEY_POINTS, OFF_TOPIC, PARTIAL, QUESTION, REFERENCE

    enc = SentenceEncoder(threads=1)
    opts = GradeOptions.from_settings(BASE)
    for i, text in enumerate((GOOD, PARTIAL, OFF_TOPIC)):
        words = timed(text.split())
        f = extract_features(enc, QUESTION, REFERENCE, KEY_POINTS, text, words)
        db.answers.insert_one({"_id": f"r-a{i}", "session_id": "r", "index": i, "question": QUESTION,
                               "status": "complete", "words": words, "features": f.to_dict(),
                               "grade": score(f, opts).to_dict(),
                               "metrics": compute_speech_metrics(words).as_dict()})
    db.sessions.insert_one({"_id": "r", "candidate": "Real", "started_at": T0,
                            "settings": BASE.snapshot()})
    calls = enc.model_calls

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the sentence encoder was used while re-scoring")

    monkeypatch.setattr(SentenceEncoder, "__init__", refuse)
    monkeypatch.setattr(SentenceEncoder, "encode", refuse)
    strict = settings_with(BASE, {"band_cutoffs": (0.75, 0.9, 0.97), "keypoint_match_threshold": 0.8})
    result = rescore(db, strict, write=True, profile=("strict", 1), writer=writer)
    assert enc.model_calls == calls and result.rescored == 3
    good, partial, off = (scored_one(db, f"r-a{i}")["grade"] for i in range(3))
    assert good["score"] > partial["score"] > off["score"] and "off_topic" in off["flags"]
    assert result.band_changes >= 1
    assert len(good["matched"]) <= len(score(db.answers.find_one({"_id": "r-a0"})["features"], opts).matched)


# --------------------------------------------------------------------------- Mohler effect


def _fake_mohler(tmp_path: Path, n: int = 60) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    """A CSV plus its feature cache (as mohler_features would write it), without the model."""
    data = tmp_path / "mohler.csv"
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 5, n)
    data.write_text("question,desired_answer,student_answer,score_avg\n"
                    + "".join(f"q{i % 5},ref {i % 5},answer {i},{v:.2f}\n" for i, v in enumerate(y)))
    cal = default_calibration()
    names = [*cal.features, "cos_question", "log_words"]
    q = np.clip(y / 5 + rng.normal(0, 0.15, n), 0, 1)
    x = np.array([[lo + qi * (hi - lo) for lo, hi in zip(cal.lo, cal.hi, strict=True)] + [0.2 * qi, math.log1p(20)]
                  for qi in q])
    return data, x, y, names


def test_mohler_effect_from_cached_features(tmp_path):
    data, x, y, names = _fake_mohler(tmp_path)
    settings = Settings(mongodb_uri=None, data_dir=tmp_path)
    assert mohler_effect(settings, data, build=False) is None  # not cached: nothing built silently
    path = mohler_cache_path(settings, data)
    write_mohler_cache(path, names, x, y, "sha")
    assert json.loads(path.read_text())["names"] == names

    before = mohler_effect(settings, data, build=False)
    assert before.n == len(y) and before.pearson_r > 0.5 and 0 < before.rmse < 2.5
    # A higher off-topic floor caps more answers at their raw cosine and changes r / RMSE.
    after = mohler_effect(settings_with(settings, {"off_topic_similarity": 0.9}), data, build=False)
    assert after.off_topic > before.off_topic
    assert (after.pearson_r, after.rmse) != (before.pearson_r, before.rmse)
    # Band cut-offs do not change a 0-5 prediction.
    same = mohler_effect(settings_with(settings, {"band_cutoffs": (0.1, 0.2, 0.3)}), data, build=False)
    assert (same.pearson_r, same.rmse) == (before.pearson_r, before.rmse)


# --------------------------------------------------------------------------- calibration view


def test_calibration_view_distributions_and_correlations(db):
    rng = np.random.default_rng(1)
    answers = []
    for s in range(40):
        g = float(rng.uniform(0.2, 0.9))
        for i in range(3):
            answers.append({
                "_id": f"c{s}-{i}", "session_id": f"c{s}", "index": i, "words": [{"word": "x", "start": 0, "end": 1}],
                "grade": {"score": g + float(rng.normal(0, 0.02))},
                "metrics": {"wpm": 100 + 80 * g + float(rng.normal(0, 3)), "fillers_per_minute": 10 - 8 * g,
                            "pauses": [{"start": 0, "end": 2, "duration": 2}] * (s % 3), "longest_pause_s": None},
            })
    answers.append({"_id": "silent", "session_id": "c99", "index": 0, "metrics": {"has_speech": False}, "grade": None})
    db.answers.insert_many(answers)

    view = calibration_view(db)
    assert view.level == "session" and view.rows == 41
    m = view.metrics
    assert m["wpm"].n == 40 and m["wpm"].pearson_with_grade > 0.9
    assert m["fillers_per_minute"].pearson_with_grade < -0.9
    assert m["longest_pause_s"].n == 0 and m["longest_pause_s"].pearson_with_grade is None  # missing, not 0
    assert m["eye_contact"].n == 0
    assert m["pauses"].n == 40 and m["grade"].n == 40
    assert {r["metric"] for r in view.table()} >= {"Pace (words per minute)", "Grade (0-1)"}
    per_answer = calibration_view(db, level="answer")
    assert per_answer.rows == 121 and per_answer.metrics["wpm"].n == 120
    subset = calibration_view(db, session_ids=["c1", "c2"])
    assert subset.rows == 2
    assert "words" not in json.dumps(pipeline()) and "features" not in json.dumps(pipeline())
