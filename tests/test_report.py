"""Session report: the aligned timeline figure, the feedback card, the queries and the page."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pymongo
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from bench.bench_report import synthetic_answer
from pipeline.card import answer_card, session_header
from pipeline.frames import frame_summary
from pipeline.queries import find_session, list_answer_frames, list_report_answers
from pipeline.report import ReportOptions
from pipeline.safe_text import WORD_JOINER, md
from pipeline.schemas import EMOTIONS, validate
from pipeline.settings import Settings, get_settings
from pipeline.signal import bucket_mean, smooth_segments
from pipeline.timeline import answer_timeline
from tests.pages_support import APP, admin_token, open_page

T0 = 1_795_610_623_703  # epoch ms the answer began
AUDIO = T0 + 500  # the first audio sample came 0.5 s later


# --------------------------------------------------------------------------- documents


def _word(w: str, start: float, end: float, t_ms: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"word": w, "start": start, "end": end, "probability": 0.9}
    if t_ms:
        out.update(t_ms=AUDIO + round(start * 1000), end_ms=AUDIO + round(end * 1000))
    return out


def make_answer(answer_id: str = "a-1", session_id: str = "s-1", *, t_ms: bool = True, wpm: float = 185.0,
                **over: Any) -> dict[str, Any]:
    """A complete answer as the sidecar stores it: 3 author key points, 2 covered."""
    text = "um so I built a cache layer and we cut latency in half uh then we measured it"
    words, t = [], 0.2
    for i, w in enumerate(text.split()):
        if i == 8:
            t += 2.5  # a 2.5 s pause before "latency"
        words.append(_word(w, round(t, 2), round(t + 0.3, 2), t_ms))
        t += 0.4
    doc = {
        "_id": answer_id, "session_id": session_id, "index": 0, "question": "Tell me about a system you built.",
        "reference": "I built a cache. It halved latency. It scaled to a million users.",
        "key_points": ["built a cache", "halved latency", "scaled to a million users"],
        "status": "complete", "started_ms": T0, "ended_ms": T0 + 12_000, "audio_started_ms": AUDIO,
        "transcript": text, "words": words,
        "metrics": {
            "has_speech": True, "word_count": len(words), "duration_s": 11.5, "speaking_s": 9.3, "wpm": wpm,
            "pace_band": "fast", "pace_track": [{"t": 5.0 + i, "wpm": 150.0 + 10 * i} for i in range(6)],
            "fillers": [{"phrase": "um", "text": "um", "start": 0.2, "end": 0.5, "word_index": 0}],
            "filler_count": 1, "fillers_per_minute": 6.5,
            "pauses": [{"start": 3.3, "end": 5.9, "duration": 2.6}], "longest_pause_s": 2.6,
            "prosody": {"hop_seconds": 0.05, "t": [round(0.025 + 0.05 * i, 3) for i in range(200)],
                        "energy_db": [-40.0 + (i % 7) for i in range(200)],
                        "pitch_hz": [None if i % 3 == 0 else 180.0 + i % 11 for i in range(200)],
                        "voiced_fraction": 0.66, "pitch_median_hz": 185.0, "pitch_p10_hz": 181.0,
                        "pitch_p90_hz": 190.0, "pitch_range_semitones": 0.9},
        },
        "grade": {"score": 0.64, "band": "good", "raw_cosine": 0.58, "calibrated": 0.61, "coverage": 2 / 3,
                  "matched": [{"key_point": "built a cache", "span": "I built a cache layer", "start": 1.0,
                               "end": 2.7, "similarity": 0.81},
                              {"key_point": "halved latency", "span": "we cut latency in half", "start": 5.9,
                               "end": 7.8, "similarity": 0.66}],
                  "missed": [{"key_point": "scaled to a million users", "best_similarity": 0.22}],
                  "flags": [], "key_point_source": "author"},
        "features": {"key_points": [{"key_point": "scaled to a million users", "span": "then we measured it",
                                     "start": 8.3, "end": 9.8, "best_similarity": 0.22}]},
    }
    doc.update(over)
    return doc


def make_frames(n: int = 60, answer_id: str = "a-1", session_id: str = "s-1", no_face: range = range(20, 30),
                eye: bool = True) -> list[dict[str, Any]]:
    """7.5 fps frames; happy before the gap, sad after it, no face inside it."""
    frames = []
    for i in range(n):
        t = T0 + round(i * 1000 / 7.5)
        f: dict[str, Any] = {"_id": f"{answer_id}-{i}", "session_id": session_id, "answer_id": answer_id,
                             "t": t, "face": i not in no_face, "tracked": False, "uncertain": False}
        if f["face"]:
            label = "happy" if i < no_face.start else "sad"
            probs = {e: (0.8 if e == label else 0.2 / 6) for e in EMOTIONS}
            f.update(box=[10, 10, 100, 100], emotions=probs, dominant=label, confidence=0.8,
                     gaze={"eye_contact": eye and i % 2 == 0, "score": 0.7 if i % 2 == 0 else 0.4, "eyes_found": 2,
                           "frontal": True, "offset": [0.0, 0.0]},
                     head={"movement": 0.01, "yaw_proxy": 0.0, "pitch_proxy": 0.0})
        else:
            f.update(box=None, emotions=None, dominant=None, confidence=None,
                     gaze={"eye_contact": None, "score": None, "eyes_found": 0, "frontal": False, "offset": None},
                     head={"movement": None, "yaw_proxy": None, "pitch_proxy": None})
        frames.append(f)
    return frames


def _trace(fig, name: str):
    found = [t for t in fig.data if t.name == name]
    assert found, f"no trace {name!r} in {[t.name for t in fig.data]}"
    return found[0]


def test_fixture_documents_pass_the_storage_schemas():
    validate("answers", make_answer())
    for f in make_frames():
        validate("frames", f)


# --------------------------------------------------------------------------- the figure


def test_timeline_has_every_track_on_one_shared_x_axis_with_a_range_slider():
    fig = answer_timeline(make_answer(), make_frames())
    names = {t.name for t in fig.data}
    expected = set(EMOTIONS) | {"emotion", "eye contact score", "head movement", "no face / no video", "words",
                                "fillers", "pauses", "key points covered", "key points missed", "pace (wpm)",
                                "pitch (Hz)", "energy (dB)"}
    assert expected <= names, expected - names
    layout = fig.layout.to_plotly_json()
    xaxes = sorted(k for k in layout if re.fullmatch(r"xaxis\d*", k))
    assert len(xaxes) == 5  # emotion, gaze, speech, pace, voice
    bottom = xaxes[-1] if len(xaxes) < 10 else max(xaxes, key=lambda k: int(k[5:] or 1))
    bottom_id = "x" + bottom[5:]
    for ax in xaxes:
        if ax != bottom:
            assert layout[ax]["matches"] == bottom_id  # linked: zooming one zooms all
    assert layout[bottom]["rangeslider"]["visible"] is True
    assert "seconds since the answer began" in layout[bottom]["title"]["text"]
    assert {t.xaxis for t in fig.data} <= {"x" + ax[5:] for ax in xaxes}
    titles = [a.text for a in fig.layout.annotations]
    assert "Emotion (stacked probability)" in titles and "Speaking pace" in titles
    json.loads(fig.to_json())  # serialisable as Streamlit sends it


def test_every_track_is_placed_in_seconds_since_the_answer_began():
    answer = make_answer()
    fig = answer_timeline(answer, make_frames())
    words = _trace(fig, "words")
    first = answer["words"][0]
    assert words.x[0] == pytest.approx((first["t_ms"] - T0) / 1000) == pytest.approx(0.7)
    assert "%{text} @ %{x:.1f} s" in words.hovertemplate and words.text[0] == "um"
    # Old documents without t_ms: audio offset + start gives the same place.
    old = answer_timeline(make_answer(t_ms=False), make_frames())
    assert list(_trace(old, "words").x) == pytest.approx(list(words.x))
    assert _trace(fig, "fillers").x[0] == pytest.approx(0.7)
    covered = _trace(fig, "key points covered")
    assert covered.x[:2] == pytest.approx((1.5, 3.2))  # 1.0-2.7 s of audio + 0.5 s offset
    assert covered.customdata[0][0] == "built a cache" and "I built a cache layer" in covered.customdata[0][1]
    missed = _trace(fig, "key points missed")
    assert missed.x[0] == pytest.approx(8.8) and missed.customdata[0][0] == "scaled to a million users"
    assert _trace(fig, "pace (wpm)").x[0] == pytest.approx(5.5)
    assert _trace(fig, "pitch (Hz)").x[0] == pytest.approx(0.525)
    assert _trace(fig, "eye contact score").x[0] == pytest.approx(0.0)
    ticks = list(fig.layout.yaxis4.ticktext)  # the words row: a label per level, key points marked
    assert "✓ built a cache" in ticks and "✗ scaled to a million users" in ticks and "pauses" in ticks


def test_no_face_is_a_gap_never_interpolated_or_smoothed_across():
    frames = make_frames(no_face=range(20, 30))
    fig = answer_timeline(make_answer(), frames, ReportOptions(emotion_smoothing_window=5))
    hover = _trace(fig, "emotion")
    gap_x = [(f["t"] - T0) / 1000 for f in frames[20:30]]
    ys = dict(zip(hover.x, hover.y, strict=True))
    assert all(ys[round(x, 3)] is None for x in gap_x)  # a gap, not a number
    gaze = _trace(fig, "eye contact score")
    assert all(dict(zip(gaze.x, gaze.y, strict=True))[round(x, 3)] is None for x in gap_x)
    # Smoothing stays inside each run of face frames: next to the gap nothing is mixed.
    sad = EMOTIONS.index("sad")
    happy = EMOTIONS.index("happy")
    i_after = list(hover.x).index((frames[30]["t"] - T0) / 1000)
    assert hover.customdata[i_after][sad] == pytest.approx(0.8) and hover.customdata[i_after][happy] < 0.05
    i_before = list(hover.x).index((frames[19]["t"] - T0) / 1000)
    assert hover.customdata[i_before][happy] == pytest.approx(0.8)
    assert "confidence %{customdata[7]:.2f}" in hover.hovertemplate
    # Each stacked band is a closed polygon per run (fill='toself' honours gaps; stacking would not).
    band = _trace(fig, "happy")
    assert band.fill == "toself" and list(band.x).count(None) == 2
    nf = _trace(fig, "no face / no video")
    assert min(v for v in nf.x if v is not None) == pytest.approx(gap_x[0] - 1 / 15, abs=1e-3)


def test_frames_without_any_face_or_any_frame_say_so_in_the_figure():
    frames = make_frames(no_face=range(0, 60))
    fig = answer_timeline(make_answer(), frames)
    notes = [a.text for a in fig.layout.annotations]
    assert "No face found: no emotion for this answer" in notes
    assert not any(t.name in EMOTIONS for t in fig.data)
    empty = make_answer(words=[], metrics={"has_speech": False, "pace_track": [], "prosody": None},
                        grade={"score": None, "band": None, "matched": [], "missed": [], "flags": ["no_speech"]})
    fig = answer_timeline(empty, [])
    notes = [a.text for a in fig.layout.annotations]
    for text in ("No video frames stored for this answer", "No words transcribed for this answer",
                 "No pace: too little speech to measure", "No pitch or energy stored (no audio analysis)"):
        assert text in notes


def test_emotion_off_hides_the_emotion_rows():
    fig = answer_timeline(make_answer(), make_frames(), ReportOptions(emotion_enabled=False))
    assert not {t.name for t in fig.data} & (set(EMOTIONS) | {"emotion"})
    layout = fig.layout.to_plotly_json()
    assert len([k for k in layout if re.fullmatch(r"xaxis\d*", k)]) == 4
    assert not any("Emotion" in (a.text or "") for a in fig.layout.annotations)
    assert "angry" not in fig.to_json()


def test_sixty_minute_answer_is_downsampled_for_display_only():
    answer, frames = synthetic_answer(minutes=60)
    stored = copy.deepcopy((answer, frames))
    opts = ReportOptions(max_display_points=800)
    fig = answer_timeline(answer, frames, opts)
    assert (answer, frames) == stored  # the documents are never modified
    for tr in fig.data:
        n = len(tr.x)
        if tr.name == "words":
            assert n == len(answer["words"]) == 9000  # events, not a signal: every word kept
            assert tr.type == "scattergl"  # that many markers draw on WebGL
        elif tr.fill == "toself":  # bands and shaded spans: polygons merged at display resolution
            assert n <= 3 * opts.max_display_points, (tr.name, n)
        elif tr.name not in ("fillers", "pause"):  # 100 fillers and 150 pauses: events, all kept
            assert n <= opts.max_display_points + 60, (tr.name, n)  # + one None per hole in the video
    assert len(_trace(fig, "pitch (Hz)").x) <= opts.max_display_points < len(answer["metrics"]["prosody"]["t"])
    assert fig.layout.xaxis5.range[1] >= 3600


def test_bucket_mean_and_smoothing():
    x = np.arange(10.0)
    y = np.array([1, 1, np.nan, np.nan, 3, 3, 3, 3, 5, 5], dtype=float)
    xb, yb = bucket_mean(x, y, 5, 0.5)
    assert len(xb) == 5 and np.isnan(yb[1]) and yb[0] == 1 and yb[4] == 5
    same_x, same_y = bucket_mean(x, y, 50)
    assert same_x is not x and np.array_equal(same_y, y, equal_nan=True)
    sm = smooth_segments(np.array([0, 0, 0, np.nan, 10, 10, 10]), 3)
    assert np.isnan(sm[3]) and list(sm[[0, 2, 4, 6]]) == [0, 0, 10, 10]
    brk = np.zeros(6, bool)
    brk[3] = True  # a hole in the sampling splits a run too
    assert list(smooth_segments(np.array([0, 0, 0, 6, 6, 6.0]), 3, brk)) == [0, 0, 0, 6, 6, 6]


# --------------------------------------------------------------------------- summary and card


def test_frame_summary_ratios_and_missing_face():
    s = frame_summary(make_frames(n=60, no_face=range(20, 30)))
    assert s["frames"] == 60 and s["face_frames"] == 50 and s["face_ratio"] == pytest.approx(50 / 60)
    assert s["eye_contact_ratio"] == pytest.approx(25 / 50)
    assert s["dominant"] == "sad" and s["dominant_probability"] == pytest.approx((30 * 0.8 + 20 * 0.2 / 6) / 50, abs=1e-3)
    none = frame_summary(make_frames(n=10, no_face=range(0, 10)))
    assert none["face_ratio"] == 0 and none["eye_contact_ratio"] is None
    assert none["emotion_means"] is None and none["dominant"] is None and none["mean_confidence"] is None
    assert frame_summary([])["face_ratio"] is None
    broken = make_frames(n=4, no_face=range(0))
    broken[1]["t"] = None  # a frame without a time cannot be placed: left out, nothing raised
    assert frame_summary(broken)["frames"] == 3


def test_card_advice_cites_the_evidence():
    answer = make_answer()
    card = answer_card(answer, frame_summary(make_frames(eye=False)))
    advice = "\n".join(card.advice)
    assert "You covered 2 of 3 key points; missed: 'scaled to a million users'." in advice
    assert ("Missed 'scaled to a million users': nothing in the answer is about it "
            "(closest: 'then we measured it' (0:09), similarity 0.22)." in advice)
    assert "Covered 'built a cache': you said 'I built a cache layer' (0:02)." in advice
    assert "Pace 185 wpm is fast (band 110–170): slow down" in advice
    assert "2 fillers ('um' at 0.7 s, 'uh' at 8.4 s" in advice
    assert "1 pause over 1 s (longest 2.6 s at 3.8 s)" in advice
    assert "Eye contact on 0% of frames with a face: look at the camera more" in advice
    assert card.grade["percent"] == 64 and card.grade["band"] == "good"
    ev = {r["key_point"]: r for r in card.evidence}
    assert ev["built a cache"]["covered"] and ev["built a cache"]["span"] == "I built a cache layer"
    assert (ev["built a cache"]["start_s"], ev["built a cache"]["end_s"]) == (1.5, 3.2)
    assert not ev["scaled to a million users"]["covered"]
    m = card.metrics
    assert m["wpm"] == 185 and m["pace_band"] == "fast" and m["filler_count"] == 2 and m["pause_count"] == 1
    assert m["dominant_emotion"] == "sad" and m["dominant_probability"] > 0.45 and card.missing == []
    json.dumps(dataclasses.asdict(card))


def test_card_uses_current_thresholds_on_stored_words():
    card = answer_card(make_answer(), None, ReportOptions(pace_high_wpm=200, pause_seconds=3.0, filler_words=("uh",)))
    advice = "\n".join(card.advice)
    assert "Pace 185 wpm is comfortable (band 110–200)" in advice
    assert "No pauses over 3 s." in advice and "1 filler ('uh' at" in advice


def test_missing_signals_are_said_and_no_number_is_invented():
    silent = make_answer(words=[], transcript="", metrics={"has_speech": False, "word_count": 0, "wpm": None,
                                                           "pace_track": [], "fillers": [], "pauses": [],
                                                           "prosody": None},
                         grade={"score": None, "band": None, "raw_cosine": None, "matched": [],
                                "missed": [{"key_point": "built a cache", "best_similarity": None}],
                                "flags": ["no_speech"], "key_point_source": "author"})
    card = answer_card(silent, frame_summary(make_frames(no_face=range(0, 60))))
    assert "No speech detected: no grade, pace, filler or pause feedback." in card.missing
    assert "No face found in this answer: no emotion or eye-contact feedback." in card.missing
    assert card.grade is None
    m = card.metrics
    for key in ("wpm", "pace_band", "filler_count", "pause_count", "longest_pause_s", "eye_contact_ratio",
                "dominant_emotion", "dominant_probability", "word_count"):
        assert m[key] is None, key
    assert not any(re.search(r"\d", a) for a in card.advice), card.advice  # no number made up
    nothing = answer_card(make_answer(), frame_summary([]))
    assert "No video frames stored for this answer: no emotion or eye-contact feedback." in nothing.missing
    busy = answer_card(make_answer(status="transcribing", grade=None, metrics=None, words=[]), None)
    assert busy.missing[0].startswith("Still being analysed") and busy.grade is None
    failed = answer_card(make_answer(status="failed", error="ASR crashed", grade=None), None)
    assert any("Analysis failed: ASR crashed" in x for x in failed.missing)


def test_card_respects_emotion_switched_off():
    card = answer_card(make_answer(), frame_summary(make_frames()), ReportOptions(emotion_enabled=False))
    assert card.metrics["dominant_emotion"] is None and card.metrics["dominant_probability"] is None
    assert "Emotion feedback is switched off." in card.notes
    assert not any(e in json.dumps(dataclasses.asdict(card)) for e in ("happy", "\"sad\""))


def test_options_from_settings_and_session_snapshot():
    opts = ReportOptions.from_settings(Settings(pause_seconds=2.0), {"emotion_enabled": False})
    assert opts.pause_seconds == 2.0 and opts.emotion_enabled is False
    assert ReportOptions.from_settings(Settings()).emotion_enabled is True


def test_session_header_and_markdown_escaping():
    h = session_header({"candidate": "Ada", "role": "backend", "started_at": datetime(2026, 1, 2, 3, 4),
                        "grade": 0.71, "band": "good"}, [make_answer(), make_answer(grade=None)])
    assert (h["grade_text"], h["answers"], h["graded_answers"]) == ("71%", 2, 1) and h["date"] == "2026-01-02 03:04 UTC"
    assert session_header({"candidate": "Ada"})["grade_text"] == "no grade"
    wj = WORD_JOINER  # the escaper itself is tested in test_security_injection.py
    assert md("[x](http://e) $a$ :smile:") == rf"\[x\]\(http\:{wj}\/\/e\) \$a\$ \:{wj}smile\:{wj}"


# --------------------------------------------------------------------------- queries


def test_report_queries_coerce_ids_sort_and_project(db):
    db.sessions.insert_one({"_id": "s-1", "candidate": "Ada", "started_at": datetime.now(UTC)})
    db.answers.insert_many([make_answer("a-2", index=1), make_answer("a-1")])
    frames = make_frames()
    db.frames.insert_many(list(reversed(frames)) + make_frames(answer_id="other"))
    assert find_session(db, {"$ne": None}) is None  # an operator smuggled in is just a string id
    assert find_session(db, "s-1")["candidate"] == "Ada"
    assert [a["_id"] for a in list_report_answers(db, "s-1")] == ["a-1", "a-2"]
    got = list_answer_frames(db, "s-1", "a-1")
    assert [f["t"] for f in got] == [f["t"] for f in frames]
    assert "box" not in got[0] and "_id" not in got[0] and set(got[0]["gaze"]) <= {"score", "eye_contact"}
    assert list_answer_frames(db, {"$gt": ""}, "a-1") == []
    assert frame_summary(got) == frame_summary(frames)


# --------------------------------------------------------------------------- the page


@pytest.fixture
def report_db(mongo_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MOCKAI_DB_NAME", "test_report_page")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")  # a coach-only server: no analysis workers needed
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri)
    db = client.test_report_page
    yield db
    client.drop_database("test_report_page")
    client.close()
    st.cache_resource.clear()
    get_settings.cache_clear()



def _page(**query: str) -> AppTest:
    return open_page("pages/report.py", admin_token(), **query)


def test_report_page_shows_figure_and_card_per_answer(report_db):
    report_db.sessions.insert_one({"_id": "s-1", "candidate": "Grace Hopper", "role": "backend", "status": "analysed",
                                   "started_at": datetime(2026, 11, 25, 12, 43, tzinfo=UTC), "grade": 0.64,
                                   "band": "good", "settings": {"emotion_enabled": True}})
    no_video = make_answer("a-2", index=1, question="What would you change?")
    report_db.answers.insert_many([make_answer(), no_video])
    report_db.frames.insert_many(make_frames())
    at = _page(session="s-1")
    assert any("Grace Hopper" in s.value for s in at.subheader)
    assert any(m.label == "Overall grade · good" and m.value == "64%" for m in at.metric)
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    spec = json.loads(charts[0].proto.spec)
    assert {"words", "eye contact score", "pace (wpm)"} <= {t.get("name") for t in spec["data"]}
    text = "\n".join(m.value for m in at.markdown)
    assert "You covered 2 of 3 key points" in text and "Pace 185 wpm is fast" in text
    assert any("No video frames stored for this answer" in i.value for i in at.info)  # the second answer
    evidence = at.dataframe[0].value.to_string()
    assert "built a cache" in evidence and "covered" in evidence
    # Switching emotion off redraws without the emotion rows.
    at.toggle[0].set_value(False).run()
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert not {t.get("name") for t in spec["data"]} & set(EMOTIONS)


def test_report_page_picks_a_session_and_handles_unknown_ids(report_db):
    at = _page()
    assert any("No sessions yet" in i.value for i in at.info)
    report_db.sessions.insert_one({"_id": "s-9", "candidate": "Alan Turing", "started_at": datetime.now(UTC)})
    at = _page()  # no query parameter: the most recent session is shown
    assert any("Alan Turing" in s.value for s in at.subheader)
    assert any("No answers stored for this session yet." in i.value for i in at.info)
    at = _page(session="nope")
    assert any(f"No session with id {md(repr('nope'))}" in e.value for e in at.error)


def test_report_page_says_when_the_database_is_down(tmp_path, monkeypatch):
    from pipeline.storage import free_port

    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200")
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")
    get_settings.cache_clear()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/report.py")
        at.query_params["session"] = "s-1"
        at.run()
        assert not at.exception
        assert any("cannot be shown while the database is unreachable" in w.value for w in at.warning)
        assert not at.get("plotly_chart")
    finally:
        st.cache_resource.clear()
        get_settings.cache_clear()


# --------------------------------------------------------------------------- emotion switched off, every view


def _feedback_script(result: dict, frames: list) -> None:  # runs as a script: plain annotations only
    from ui.cards import show_feedback

    show_feedback(result, frames)


def _shown(at: AppTest) -> str:
    """Every piece of text a user reads on the page."""
    parts = [e.value for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.subheader]]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("enabled", [True, False])
def test_emotion_setting_governs_feedback_and_report_alike(report_db, monkeypatch, enabled):
    """The feedback right after an answer and the report render the same stored answer with the
    same options: with MOCKAI_EMOTION_ENABLED=false neither names an expression."""
    monkeypatch.setenv("MOCKAI_EMOTION_ENABLED", str(enabled).lower())
    get_settings.cache_clear()
    frames = make_frames()
    dominant = frame_summary(frames)["dominant"]
    assert dominant in EMOTIONS  # the frames do carry an expression to show or hide
    answer = make_answer()
    # The session was recorded with emotion on: only the server setting switches it off.
    report_db.sessions.insert_one({"_id": "s-1", "candidate": "Grace Hopper", "started_at": datetime.now(UTC),
                                   "settings": {"emotion_enabled": True}})
    report_db.answers.insert_one(answer)
    report_db.frames.insert_many(frames)

    result = {k: v for k, v in answer.items() if k != "_id"} | {"answer_id": answer["_id"]}  # as the sidecar sends
    feedback = AppTest.from_function(_feedback_script, args=(result, frames), default_timeout=30).run()
    assert not feedback.exception, [e.value for e in feedback.exception]
    report = _page(session="s-1")
    spec = json.loads(report.get("plotly_chart")[0].proto.spec)
    emotion_traces = {t.get("name") for t in spec["data"]} & set(EMOTIONS)

    feedback_text, report_text = _shown(feedback), _shown(report)
    assert "You covered 2 of 3 key points" in feedback_text and "You covered 2 of 3 key points" in report_text
    if enabled:
        assert f"Most frequent expression: {dominant}" in feedback_text
        assert f"Expression: {dominant}" in report_text and emotion_traces
    else:
        for text in (feedback_text, report_text):
            assert not re.search(rf"\b{dominant}\b", text) and "Most frequent expression" not in text
            assert md("Emotion feedback is switched off.") in text
        assert "Expression" not in report_text and not emotion_traces  # no expression tile at all
        assert report.toggle[0].value is False and report.toggle[0].disabled
