"""Face signals in the report: frame columns and summary (head pose, blinks, smiles, framing, method),
time-tied look-away advice, the framing hint, the eye-contact and head-pose timeline tracks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipeline.card import answer_card, answer_card_view
from pipeline.face_advice import framing_hint, mmss
from pipeline.frames import frame_arrays, frame_summary
from pipeline.records import FrameSample
from pipeline.report import ReportOptions
from pipeline.schemas import EMOTIONS, validate
from pipeline.settings import Settings
from pipeline.timeline import answer_timeline
from tests.test_report import make_answer, make_frames

T0 = 1_795_700_000_000  # epoch ms the answer began (audio starts with it)
FPS = 5.0


def sample(t_ms: int, *, face: bool = True, eye: bool | None = True, method: str = "iris",
           gaze: tuple[float, float] | None = (0.0, 2.0), head: tuple[float, float, float] | None = (3.0, 8.0, -1.5),
           offset: tuple[float, float] = (0.02, -0.05), scale: float = 0.3, closed: bool = False,
           smiling: bool = False, too_small: bool = False) -> dict[str, Any]:
    """One frame document exactly as pipeline.records.FrameSample, plus its storage ids."""
    if not face:
        rec: FrameSample = {
            "t": t_ms, "face": False, "box": None, "face_confidence": None, "emotions": None, "dominant": None,
            "confidence": None, "uncertain": False,
            "gaze": {"eye_contact": None, "score": None, "eyes_found": 0, "frontal": None, "method": method,
                     "yaw": None, "pitch": None, "iris": None, "reason": "no face"},
            "head": {"movement": None, "yaw_proxy": None, "pitch_proxy": None, "yaw": None, "pitch": None,
                     "roll": None},
            "detector": "mediapipe", "model": "fer-tflite", "tracked": False, "frozen": False, "latency_ms": 3.1,
            "framing": None, "eyes": None, "mouth": None, "aligned": False, "too_small": False,
        }
        return {"_id": f"f-{t_ms}", "session_id": "s-f", "answer_id": "a-f", **rec}
    judged = eye is not None
    probs = {e: (0.7 if e == "neutral" else 0.05) for e in EMOTIONS}
    rec = {
        "t": t_ms, "face": True, "box": [200, 120, 190, 190], "face_confidence": 0.93, "emotions": probs,
        "dominant": "neutral", "confidence": 0.7, "uncertain": False,
        "gaze": {"eye_contact": eye, "score": (0.8 if eye else 0.2) if judged else None, "eyes_found": 2,
                 "frontal": bool(head is not None and abs(head[0]) < 15 and abs(head[1]) < 15),
                 "method": method, "yaw": gaze[0] if gaze else None, "pitch": gaze[1] if gaze else None,
                 "iris": [0.5, 0.5] if method == "iris" else None,
                 "reason": None if judged else ("face too small" if too_small else "eyes closed")},
        "head": {"movement": 0.01, "yaw_proxy": None, "pitch_proxy": None,
                 "yaw": head[0] if head else None, "pitch": head[1] if head else None,
                 "roll": head[2] if head else None},
        "detector": "mediapipe", "model": "fer-tflite", "tracked": True, "frozen": False, "latency_ms": 3.4,
        "framing": {"offset": [offset[0], offset[1]], "scale": scale},
        "eyes": {"ear": [0.08, 0.09] if closed else [0.3, 0.31], "closed": closed},
        "mouth": {"smile": 0.7 if smiling else 0.1, "smiling": smiling, "open": 0.05},
        "aligned": True, "too_small": too_small,
    }
    return {"_id": f"f-{t_ms}", "session_id": "s-f", "answer_id": "a-f", **rec}


def clip(seconds: float = 60.0, **by_time: Any) -> list[dict[str, Any]]:
    """Frames at 5 fps; ``by_time`` maps (start_s, end_s) keyword groups to sample() overrides via
    ``spans=[(a, b, {...}), ...]``."""
    spans = by_time.get("spans", [])
    out = []
    for i in range(int(seconds * FPS)):
        x = i / FPS
        over: dict[str, Any] = {}
        for a, b, o in spans:
            if a <= x < b:
                over.update(o)
        out.append(sample(T0 + round(x * 1000), **over))
    return out


DOWN = {"eye": False, "gaze": (3.0, 28.0), "head": (2.0, 22.0, 0.5)}
SIDE = {"eye": False, "gaze": (-35.0, 4.0), "head": (-30.0, 5.0, 1.0)}


def speech_answer(silent: tuple[float, float] | None = None, **over: Any) -> dict[str, Any]:
    """60 s of speech (a word every 0.4 s from 1 s), one covered key point at 40-48 s, one missed."""
    words = []
    t = 1.0
    while t < 59.0:
        if silent is None or not silent[0] <= t < silent[1]:
            words.append({"word": "word", "start": round(t, 2), "end": round(t + 0.3, 2), "probability": 0.9,
                          "t_ms": T0 + round(t * 1000), "end_ms": T0 + round((t + 0.3) * 1000)})
        t += 0.4
    doc = make_answer("a-f", "s-f", started_ms=T0, audio_started_ms=T0, ended_ms=T0 + 60_000, words=words,
                      transcript="word " * len(words))
    doc["grade"] = {"score": 0.7, "band": "good", "raw_cosine": 0.6, "coverage": 0.5, "flags": [],
                    "key_point_source": "author",
                    "matched": [{"key_point": "cut latency in half", "span": "we cut latency", "start": 40.0,
                                 "end": 48.0, "similarity": 0.8}],
                    "missed": [{"key_point": "scaled out", "best_similarity": 0.2}]}
    doc["features"] = {"key_points": []}
    doc.update(over)
    return doc


def _trace(fig, name: str):
    found = [t for t in fig.data if t.name == name]
    assert found, f"no trace {name!r} in {[t.name for t in fig.data]}"
    return found[0]


# --------------------------------------------------------------------------- frames


def test_schema_shaped_frames_pass_the_storage_schema():
    for f in (sample(T0), sample(T0, face=False), sample(T0, eye=None, too_small=True)):
        validate("frames", f)


def test_frame_columns_read_new_fields_and_leave_old_documents_missing():
    fa = frame_arrays([sample(T0 + 200, head=(10.0, -5.0, 2.5), gaze=(4.0, 6.0), offset=(0.1, 0.25), scale=0.2,
                              closed=True, smiling=True), sample(T0, face=False)])
    assert list(fa.t_ms) == [T0, T0 + 200]  # sorted
    assert np.isnan(fa.head_yaw[0]) and np.isnan(fa.framing_scale[0]) and np.isnan(fa.eyes_closed[0])
    assert (fa.head_yaw[1], fa.head_pitch[1], fa.head_roll[1]) == (10.0, -5.0, 2.5)
    assert (fa.gaze_yaw[1], fa.gaze_pitch[1]) == (4.0, 6.0)
    assert (fa.framing_dx[1], fa.framing_dy[1], fa.framing_scale[1]) == (0.1, 0.25, 0.2)
    assert fa.eyes_closed[1] == 1.0 and fa.smiling[1] == 1.0 and fa.smile[1] == pytest.approx(0.7)
    assert fa.method == (None, "iris")  # no face: nothing judged, no method
    old = frame_arrays(make_frames(n=10))  # stored before head pose / framing existed (gaze.offset, no method)
    for col in (old.head_yaw, old.head_pitch, old.head_roll, old.gaze_yaw, old.framing_dx, old.framing_scale,
                old.eyes_closed, old.smile, old.smiling):
        assert np.isnan(col).all()
    assert old.method == (None,) * 10 and not np.isnan(old.eye_contact).all()


def test_summary_head_pose_blinks_smiles_framing_and_method():
    # yaw alternates +-4 (|yaw| = 4), pitch 8..17 over 10 frames, roll -1.5; 3 closed-eye runs in 60 s.
    frames = []
    for i in range(300):
        x = i / FPS
        closed = any(a <= x < a + 0.4 for a in (10.0, 30.0, 50.0))
        frames.append(sample(T0 + round(x * 1000), head=(4.0 if i % 2 else -4.0, 8.0 + i % 10, -1.5), closed=closed,
                             eye=None if closed else True, smiling=x < 15.0, offset=(-0.04, 0.3), scale=0.1))
    s = frame_summary(frames)
    pose = s["head_pose"]
    assert pose is not None and pose["frames"] == 300
    assert pose["yaw_median"] == 4.0 and pose["yaw_p90"] == 4.0 and pose["roll_median"] == 1.5
    assert pose["pitch_median"] == pytest.approx(12.5) and pose["pitch_p90"] == pytest.approx(np.percentile(
        [8.0 + i % 10 for i in range(300)], 90), abs=0.05)
    assert s["blink_count"] == 3 and s["eyes_frames"] == 300
    assert s["blink_rate_per_min"] == pytest.approx(3 / (59.8 / 60), abs=0.05)
    assert s["smile_ratio"] == pytest.approx(0.25) and s["smile_frames"] == 300
    assert s["framing"] == {"frames": 300, "dx": -0.04, "dy": 0.3, "scale": 0.1}
    assert s["eye_contact_method"] == "iris" and s["eye_contact_ratio"] == 1.0
    assert s["eye_contact_frames"] == 300 - 6  # closed-eye samples are not judged


def test_summary_without_face_or_new_fields_is_none_never_zero():
    none = frame_summary([sample(T0 + i * 200, face=False) for i in range(20)])
    assert none["face_frames"] == 0 and none["head_pose"] is None and none["framing"] is None
    assert none["blink_count"] is None and none["blink_rate_per_min"] is None and none["smile_ratio"] is None
    assert none["eye_contact_ratio"] is None and none["eye_contact_method"] is None
    old = frame_summary(make_frames())
    assert old["head_pose"] is None and old["framing"] is None and old["blink_rate_per_min"] is None
    assert old["eye_contact_method"] is None and old["eye_contact_ratio"] == pytest.approx(0.5)
    short = frame_summary(clip(5.0))  # 5 s of eyes: too short for a per-minute rate
    assert short["blink_count"] == 0 and short["blink_rate_per_min"] is None


# --------------------------------------------------------------------------- advice tied to time


def test_look_down_while_making_a_key_point_is_named_with_its_times():
    frames = clip(spans=[(42.0, 51.0, DOWN), (20.0, 23.0, SIDE), (10.0, 11.0, SIDE)])  # the 1 s one: too short
    card = answer_card_view(speech_answer(), frames, ReportOptions())
    timed = [a for a in card.advice if " at " in a and ("looked" in a)]
    assert timed == [
        "You looked down at 0:42–0:51 while making your key point 'cut latency in half': keep your eyes on the "
        "camera as you make your points.",
        "You looked to the side at 0:20–0:23 while speaking: keep your eyes on the camera as you make your points.",
    ]
    eye = next(a for a in card.advice if a.startswith("Eye contact on"))
    assert eye == "Eye contact on 78% of frames with a face (iris gaze): good."  # 65 of 300 samples away
    assert card.metrics["eye_contact_method"] == "iris"
    tiles = {t.label: t for t in card.tiles}
    assert tiles["Eye contact · iris"].value == "78%" and "iris gaze" in (tiles["Eye contact · iris"].help or "")
    assert tiles["Head pose"].value == "3°/8°" and tiles["Head pose"].help.startswith("yaw/pitch: yaw 3°, pitch 8°")
    assert [t.label for t in card.tiles][-1] == "Expression"


def test_a_stretch_that_only_brushes_a_key_point_is_said_while_speaking():
    frames = clip(spans=[(36.0, 41.0, DOWN)])  # 1 s of it inside the key point's 40-48 s
    card = answer_card_view(speech_answer(), frames, ReportOptions())
    line = next(a for a in card.advice if a.startswith("You looked"))
    assert line.startswith("You looked down at 0:36–0:41 while speaking:")


def test_look_away_lines_are_longest_first_capped_and_follow_the_threshold():
    spans = [(5.0, 8.0, SIDE), (12.0, 14.5, DOWN), (20.0, 26.0, {**DOWN, "gaze": (0.0, -30.0)}),
             (30.0, 34.0, SIDE), (50.0, 51.6, DOWN)]
    frames = clip(spans=spans)
    lines = [a for a in answer_card_view(speech_answer(), frames, ReportOptions()).advice if a.startswith("You looked")]
    assert [line.split(" while")[0] for line in lines] == [
        "You looked up at 0:20–0:26", "You looked to the side at 0:30–0:34", "You looked to the side at 0:05–0:08"]
    longer = answer_card_view(speech_answer(), frames, ReportOptions(gaze_away_min_seconds=3.5)).advice
    assert [a.split(" while")[0] for a in longer if a.startswith("You looked")] == [
        "You looked up at 0:20–0:26", "You looked to the side at 0:30–0:34"]
    shorter = answer_card_view(speech_answer(), frames, ReportOptions(gaze_away_min_seconds=1.5)).advice
    assert len([a for a in shorter if a.startswith("You looked")]) == 3  # at most three lines


def test_looking_away_during_a_silence_is_not_named():
    frames = clip(spans=[(42.0, 51.0, DOWN)])
    card = answer_card_view(speech_answer(silent=(41.0, 52.0)), frames, ReportOptions())
    assert not [a for a in card.advice if a.startswith("You looked")]
    # Half of it spoken: only the spoken part, cut at the silence.
    card = answer_card_view(speech_answer(silent=(47.0, 55.0)), frames, ReportOptions())
    assert [a.split(" while")[0] for a in card.advice if a.startswith("You looked")] == ["You looked down at 0:42–0:47"]


def test_without_a_transcript_the_stretch_is_named_without_claiming_speech():
    frames = clip(spans=[(42.0, 51.0, DOWN)])
    silent = speech_answer(words=[], transcript="", grade=None, metrics={"has_speech": False})
    card = answer_card_view(silent, frames, ReportOptions())
    assert ("You looked down at 0:42–0:51: keep your eyes on the camera as you make your points."
            in card.advice)


def test_frontal_proxy_says_the_face_turned_away_not_where_the_eyes_looked():
    frames = clip(spans=[(42.0, 51.0, {**DOWN, "gaze": None})])
    for f in frames:
        f["gaze"].update(method="frontal-proxy", yaw=None, pitch=None, iris=None)
    card = answer_card_view(speech_answer(), frames, ReportOptions())
    assert not any("You looked" in a for a in card.advice)
    assert ("Your face turned down, away from the camera, at 0:42–0:51 while making your key point "
            "'cut latency in half': face the camera as you make your points.") in card.advice
    assert any(a.startswith("Eye contact on 85% of frames with a face (frontal-face proxy") for a in card.advice)
    assert "Eye contact · proxy" in [t.label for t in card.tiles]


def test_answer_card_without_frames_keeps_the_ratio_line_only():
    frames = clip(spans=[(42.0, 51.0, DOWN)])
    card = answer_card(speech_answer(), frame_summary(frames), ReportOptions())  # summary only: no times
    assert not any(a.startswith("You looked") for a in card.advice)
    assert any(a.startswith("Eye contact on 85% of frames with a face (iris gaze)") for a in card.advice)


def test_old_documents_keep_their_card_and_get_no_head_pose():
    card = answer_card_view(make_answer(), make_frames(eye=False), ReportOptions())
    assert "Eye contact on 0% of frames with a face: look at the camera more, especially while making your key " \
           "points." in card.advice
    labels = [t.label for t in card.tiles]
    assert "Eye contact" in labels and "Head pose" not in labels
    assert card.metrics["head_pose"] is None and card.metrics["eye_contact_method"] is None
    assert not any(n.startswith("Head pose") for n in card.notes)
    assert not any("Framing" in a for a in card.advice)


def test_no_face_and_too_small_faces_say_why_with_no_number():
    none = answer_card_view(speech_answer(), [sample(T0 + i * 200, face=False) for i in range(100)], ReportOptions())
    assert "No face found in this answer: no emotion or eye-contact feedback." in none.missing
    assert none.metrics["eye_contact_ratio"] is None and none.metrics["head_pose"] is None
    assert {t.label: t.value for t in none.tiles}["Eye contact"] == "—"
    small = [sample(T0 + i * 200, eye=None, too_small=True, scale=0.05, gaze=None, head=None) for i in range(100)]
    card = answer_card_view(speech_answer(), small, ReportOptions())
    assert any(m.startswith("Eye contact could not be judged: your face was too small") for m in card.missing)
    assert card.metrics["eye_contact_ratio"] is None and "Head pose" not in [t.label for t in card.tiles]
    assert any("far from the camera (your face is 5% of the picture's width)" in a for a in card.advice)


def test_geometric_signals_are_shown_with_their_meaning():
    frames = clip(spans=[(10.0, 10.4, {"closed": True, "eye": None}), (30.0, 30.4, {"closed": True, "eye": None}),
                         (0.0, 15.0, {"smiling": True})])
    card = answer_card_view(speech_answer(), frames, ReportOptions())
    note = next(n for n in card.notes if n.startswith("Head pose:"))
    assert note.startswith("Head pose: yaw 3°, pitch 8°, roll 2° (median |angle|)")
    assert "blinks: 2 per minute (closed-eye runs among the sampled frames" in note
    assert "smiling in 25% of frames (mouth width and corner lift)" in note
    assert card.metrics["smile_ratio"] == pytest.approx(0.25) and card.metrics["blink_rate_per_min"] == 2.0


# --------------------------------------------------------------------------- framing


def test_framing_hint_thresholds_and_wording():
    f = {"frames": 10, "dx": 0.0, "dy": -0.25, "scale": 0.3}
    assert framing_hint(f, 0.2, 0.12) == ("Framing (this does not affect eye contact): your face sits high in the "
                                          "picture; move the camera or your seat so it is nearer the centre.")
    assert framing_hint({**f, "dy": -0.19}, 0.2, 0.12) is None
    assert framing_hint({**f, "dy": -0.19}, 0.15, 0.12) is not None
    assert "sits low and to the right in the picture" in (framing_hint({**f, "dy": 0.3, "dx": 0.21}, 0.2, 0.12) or "")
    assert "sits to the left in the picture" in (framing_hint({**f, "dy": 0.0, "dx": -0.3}, 0.2, 0.12) or "")
    far = framing_hint({**f, "dy": 0.0, "scale": 0.08}, 0.2, 0.12) or ""
    assert "far from the camera (your face is 8% of the picture's width)" in far and "sits" not in far
    assert framing_hint({**f, "dy": 0.0, "scale": 0.13}, 0.2, 0.12) is None
    assert framing_hint(None, 0.2, 0.12) is None


def test_high_in_the_frame_is_a_framing_hint_not_an_eye_contact_penalty():
    frames = clip(spans=[(0.0, 60.0, {"offset": (0.0, -0.3)})])
    card = answer_card_view(speech_answer(), frames, ReportOptions())
    assert any(a.startswith("Framing (this does not affect eye contact): your face sits high") for a in card.advice)
    assert "Eye contact on 100% of frames with a face (iris gaze): good." in card.advice
    calm = answer_card_view(speech_answer(), frames, ReportOptions(framing_offset_hint=0.35))
    assert not any(a.startswith("Framing") for a in calm.advice)


def test_report_thresholds_come_from_settings():
    s = Settings(framing_offset_hint=0.3, framing_small_face=0.05, gaze_away_min_seconds=4.0)
    opts = ReportOptions.from_settings(s)
    assert (opts.framing_offset_hint, opts.framing_small_face, opts.gaze_away_min_seconds) == (0.3, 0.05, 4.0)
    d = ReportOptions()
    assert (d.framing_offset_hint, d.framing_small_face, d.gaze_away_min_seconds) == (0.2, 0.12, 2.0)
    assert mmss(0.4) == "0:00" and mmss(42.0) == "0:42" and mmss(65.2) == "1:05" and mmss(-1) == "0:00"


# --------------------------------------------------------------------------- timeline


def test_timeline_has_eye_contact_and_head_pose_tracks():
    frames = clip(20.0, spans=[(5.0, 8.0, DOWN), (12.0, 13.0, {"face": False})])
    fig = answer_timeline(speech_answer(ended_ms=T0 + 20_000), frames, ReportOptions())
    eye = _trace(fig, "Eye contact")
    ys = dict(zip(eye.x, eye.y, strict=True))
    assert ys[0.0] == 1.0 and ys[5.0] == 0.0 and ys[7.8] == 0.0 and ys[8.0] == 1.0
    assert ys[12.0] is None and ys[12.8] is None  # no face: a gap, not 0
    yaw, pitch, roll = (_trace(fig, n) for n in ("Head yaw (°)", "Head pitch (°)", "Head roll (°)"))
    py = dict(zip(pitch.x, pitch.y, strict=True))
    assert py[0.0] == 8.0 and py[5.0] == 22.0 and py[12.4] is None
    assert dict(zip(yaw.x, yaw.y, strict=True))[6.0] == 2.0 and dict(zip(roll.x, roll.y, strict=True))[1.0] == -1.5
    assert yaw.yaxis == pitch.yaxis == roll.yaxis != eye.yaxis  # a row of its own
    assert _trace(fig, "Gaze pitch (°)").visible == "legendonly"
    titles = [a.text for a in fig.layout.annotations]
    assert "Head pose (degrees)" in titles and "Eye contact and head movement" in titles
    layout = fig.layout.to_plotly_json()
    assert len([k for k in layout if k.startswith("xaxis")]) == 6  # emotion, gaze, head, speech, pace, voice


def test_timeline_of_old_documents_has_no_head_pose_row():
    fig = answer_timeline(make_answer(), make_frames())
    names = {t.name for t in fig.data}
    assert "Eye contact" in names and not names & {"Head yaw (°)", "Head pitch (°)", "Head roll (°)"}
    assert "Head pose (degrees)" not in [a.text for a in fig.layout.annotations]
    eye = _trace(fig, "Eye contact")
    assert [y for y in eye.y[:4]] == [1.0, 0.0, 1.0, 0.0]  # 0/1 per frame as stored
    none = answer_timeline(speech_answer(), [sample(T0 + i * 200, face=False) for i in range(50)])
    assert not {t.name for t in none.data} & {"Head yaw (°)", "Eye contact"}


def test_the_report_query_keeps_every_face_signal_the_report_reads(db):
    from pipeline.queries import list_answer_frames

    frames = clip(20.0, spans=[(5.0, 8.0, DOWN), (12.0, 13.0, {"face": False}), (15.0, 15.4, {"closed": True}),
                               (0.0, 4.0, {"smiling": True, "offset": (0.3, 0.25)})])
    db.frames.insert_many([dict(f) for f in frames])
    got = list_answer_frames(db, "s-f", "a-f")
    assert len(got) == len(frames) and "box" not in got[0]
    assert frame_summary(got) == frame_summary(frames)
    answer = speech_answer(ended_ms=T0 + 20_000)
    assert answer_card_view(answer, got, ReportOptions()).advice == answer_card_view(answer, frames,
                                                                                     ReportOptions()).advice
    fig = answer_timeline(answer, got)
    assert dict(zip(_trace(fig, "Head pitch (°)").x, _trace(fig, "Head pitch (°)").y, strict=True))[6.0] == 22.0
