"""Run the sidecar on recorded media: the same workers, ring and queues as a live interview.

Frames are sampled from the video at the configured rate and pushed into the ring
(blocking, so a file never drops a frame); audio is pushed as stamped 16 kHz chunks.
The clock starts at the media's first sample, so every time in the report is seconds
from the start of the media.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.face_advice import framing_hint
from pipeline.frames import frame_summary
from pipeline.media import MediaError, check_duration, iter_video_frames, load_audio, probe
from pipeline.records import SAMPLE_RATE
from pipeline.settings import Settings
from sidecar.protocol import AnswerStart, AnswerSummary, CollectedFrame, WorkerEvent
from sidecar.supervisor import Sidecar

AUDIO_CHUNK_S = 0.5

Progress = Callable[[str, int], object]  # (what, how many so far): e.g. ("video", 120 frames)


@dataclass
class AnalyzeRequest:
    question: str
    reference: str = ""
    key_points: tuple[str, ...] = ()
    video: Path | None = None
    audio: Path | None = None
    candidate: str = "batch"
    role: str = "custom"
    hotwords: tuple[str, ...] = ()


@dataclass
class _Collected:
    frames: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.done = threading.Condition(self.lock)


def result_wait_seconds(audio_seconds: float) -> float:
    """How long to wait for the speech worker after the last audio: all of a file's audio is queued at once,
    so a long recording is transcribed after it was pushed (seen: a 15-min answer needs over 5 min here)."""
    return 300.0 + 1.5 * audio_seconds


def analyze(request: AnalyzeRequest, settings: Settings, store: bool = False,
            sidecar: Sidecar | None = None, progress: Progress | None = None,
            session_id: str | None = None, index: int = 0, answer_id: str | None = None) -> dict[str, Any]:
    """Analyse one recorded answer; returns the JSON-able report. Raises MediaError for bad media.

    Media longer than ``settings.media.max_answer_seconds`` raises MediaTooLongError: from the
    header before anything is decoded, or from the decoders once they pass the cap.

    With ``session_id`` the answer joins that (already stored) session as answer ``index``;
    otherwise, when storing, a session of its own is created. ``answer_id`` fixes the stored answer's
    id (a background job's, so that a retry stores the same answer); default a new one.
    """
    timings: dict[str, Any] = {}
    t_all = time.perf_counter()
    if request.video is None and request.audio is None:
        raise MediaError("give a video file, an audio file, or both")
    cap = settings.media.max_answer_seconds
    for source in (request.video, request.audio):
        if source is not None:
            check_duration(source, cap)
    video_info = probe(request.video) if request.video is not None else None
    if video_info is not None and not video_info.has_video:
        raise MediaError(f"{request.video}: no video stream", public="The file contains no video.")
    audio_source = request.audio or (request.video if video_info is not None and video_info.has_audio else None)
    t = time.perf_counter()
    audio = load_audio(audio_source, max_seconds=cap) if audio_source is not None else None
    timings["decode_audio_s"] = round(time.perf_counter() - t, 3)

    own = sidecar is None
    if sidecar is None:
        t = time.perf_counter()
        # One file is one answer at a time: an automatic pool would load N speech models for nothing.
        one = settings if settings.sidecar.speech_workers else settings.model_copy(
            update={"sidecar": settings.sidecar.model_copy(update={"speech_workers": 1})})
        sidecar = Sidecar(one, store=store).start()
        if not sidecar.wait_ready():
            status = sidecar.status()
            sidecar.stop()
            raise RuntimeError(f"sidecar failed to start: {status['workers']}")
        timings["sidecar_start_s"] = round(time.perf_counter() - t, 3)
        timings["warm_up"] = {n: w["warm_up"] for n, w in sidecar.status()["workers"].items()}
    try:
        return _run(request, settings, store, sidecar, audio, timings, t_all, progress, session_id, index, answer_id)
    finally:
        if own:
            sidecar.stop()


def _run(request: AnalyzeRequest, settings: Settings, store: bool, sidecar: Sidecar,
         audio: np.ndarray | None, timings: dict[str, Any], t_all: float, progress: Progress | None,
         session_id: str | None, index: int, answer_id: str | None = None) -> dict[str, Any]:
    own_session = session_id is None
    session_id, answer_id = session_id or uuid.uuid4().hex, answer_id or uuid.uuid4().hex
    t0_ms = int(time.time() * 1000)
    session_store = None
    if store and own_session:
        from pipeline.store import Store

        session_store = Store(settings, writer_name="cli")
        session_store.writer.insert("sessions", {
            "_id": session_id, "candidate": request.candidate, "role": request.role, "source": "cli",
            "started_at": datetime.fromtimestamp(t0_ms / 1000, UTC), "status": "recording",
            "settings": settings.snapshot(),
        })
    collected = _Collected()

    def on_event(ev: WorkerEvent) -> None:
        if isinstance(ev, CollectedFrame) and ev.answer_id == answer_id:
            with collected.done:
                collected.frames.append(ev.record)
                collected.done.notify_all()

    sidecar.subscribe(on_event)
    sidecar.start_answer(AnswerStart(session_id, answer_id, index, request.question, request.reference,
                                     tuple(request.key_points), t0_ms, tuple(request.hotwords)))
    sampled = 0
    t = time.perf_counter()
    if request.video is not None:
        try:
            for ts, image in iter_video_frames(request.video, every_n=settings.capture.frame_sample_every,
                                               max_width=settings.capture.frame_max_width,
                                               max_seconds=settings.media.max_answer_seconds):
                sidecar.push_frame(_fit(image, sidecar), t0_ms + int(round(ts * 1000)), session_id, answer_id,
                                   block=True, collect=True)
                sampled += 1
                if progress is not None:
                    progress("video", sampled)
        except MediaError:  # e.g. video past the cap under a header that said less: close the answer
            sidecar.end_answer(answer_id, t0_ms, status="incomplete")
            raise
    if progress is not None:
        progress("speech", 0)
    duration_s = 0.0
    if audio is not None:
        step = int(AUDIO_CHUNK_S * SAMPLE_RATE)
        for i in range(0, len(audio), step):
            sidecar.push_audio(answer_id, t0_ms + int(i * 1000 / SAMPLE_RATE), audio[i:i + step])
        duration_s = len(audio) / SAMPLE_RATE
    with collected.done:
        collected.done.wait_for(lambda: len(collected.frames) >= sampled, timeout=max(60.0, sampled))
    timings["frames_s"] = round(time.perf_counter() - t, 3)
    t_end = time.perf_counter()
    sidecar.end_answer(answer_id, t0_ms + int(duration_s * 1000))
    result = sidecar.wait_result(answer_id, timeout=result_wait_seconds(duration_s)) or {}
    timings["end_to_result_s"] = round(time.perf_counter() - t_end, 3)
    timings.update({k: round(v, 3) for k, v in result.get("timings", {}).items()})
    timings["total_s"] = round(time.perf_counter() - t_all, 3)
    emotion_stats = sidecar.status()["workers"]["emotion"]["metrics"].get("latency", {}).get("emotion")
    if emotion_stats:
        timings["emotion_per_frame_ms"] = {k: round(v, 2) for k, v in emotion_stats.items()}

    frames = sorted(collected.frames, key=lambda f: f["t"])
    report = _report(request, result, frames, t0_ms, sampled, audio is not None, timings, settings)
    report["session_id"], report["answer_id"] = session_id, answer_id
    if session_store is not None:
        grade = result.get("grade") or {}
        session_store.writer.update("sessions", session_id, {
            "status": "analysed", "ended_at": datetime.now(UTC), "grade": grade.get("score"),
            "band": grade.get("band"), "flags": list(grade.get("flags") or []),
        })
        session_store.writer.flush(30)
        session_store.close()
    return report


def _fit(image: np.ndarray, sidecar: Sidecar) -> np.ndarray:
    h, w = image.shape[:2]
    if h <= sidecar.ring.max_height and w <= sidecar.ring.max_width:
        return image
    import cv2

    scale = min(sidecar.ring.max_height / h, sidecar.ring.max_width / w)
    return cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def _report(request: AnalyzeRequest, result: AnswerSummary, frames: list[dict[str, Any]], t0_ms: int,
            sampled: int, has_audio: bool, timings: dict[str, Any], settings: Settings) -> dict[str, Any]:
    metrics = result.get("metrics") or {}
    grade = result.get("grade")
    if grade is not None:
        grade = {**grade, "evidence": {"matched": grade.get("matched", []), "missed": grade.get("missed", [])}}
    return {
        "question": request.question,
        "transcript": result.get("transcript", "") if has_audio else None,
        "words": [
            {"word": w["word"], "start": w["start"], "end": w["end"], "probability": w.get("probability")}
            for w in result.get("words", [])
        ],
        "frames": [_frame_row(f, t0_ms) for f in frames],
        "frames_summary": frames_summary(frames, sampled, settings),
        "metrics": {
            "wpm": metrics.get("wpm"), "pace_band": metrics.get("pace_band"), "fillers": metrics.get("fillers", []),
            "filler_count": metrics.get("filler_count"), "pauses": metrics.get("pauses", []),
            "pace_track": metrics.get("pace_track", []), "has_speech": metrics.get("has_speech"),
        },
        "grade": grade,
        "star": result.get("star"),
        "missing": _missing(has_audio, frames, metrics, grade),
        "timings": timings,
    }


def _frame_row(f: dict[str, Any], t0_ms: int) -> dict[str, Any]:
    """One frame of the JSON: the stored record's main fields, plus head pose and gaze direction
    in degrees (None where not measured, e.g. with the frontal-face proxy or without a face)."""
    gaze, head = f.get("gaze") or {}, f.get("head") or {}
    return {"t": round((f["t"] - t0_ms) / 1000.0, 3), "face": f["face"], "emotions": f["emotions"],
            "dominant": f["dominant"], "confidence": f["confidence"], "gaze": f["gaze"], "head": f.get("head"),
            "box": f["box"], "head_yaw": head.get("yaw"), "head_pitch": head.get("pitch"),
            "head_roll": head.get("roll"), "gaze_yaw": gaze.get("yaw"), "gaze_pitch": gaze.get("pitch"),
            "framing": f.get("framing"), "eyes": f.get("eyes"), "mouth": f.get("mouth"),
            "too_small": f.get("too_small")}


def frames_summary(frames: list[dict[str, Any]], sampled: int, settings: Settings) -> dict[str, Any]:
    """Face rate, eye contact and its method, head pose (median / p90 |angle|), blink rate, smile
    share and the framing hint of the analysed frames; None for what was not measured."""
    s = frame_summary(frames)
    ratio = s["eye_contact_ratio"]
    report = settings.report
    return {
        "sampled": sampled, "analysed": len(frames), "with_face": s["face_frames"],
        "face_ratio": round(s["face_ratio"], 3) if s["face_ratio"] is not None else None,
        "eye_contact_frames": s["eye_contact_frames"],
        "eye_contact_ratio": round(ratio, 3) if ratio is not None else None,
        "eye_contact_method": s["eye_contact_method"], "too_small_frames": s["too_small_frames"],
        "head_pose": s["head_pose"], "blink_count": s["blink_count"], "blink_rate_per_min": s["blink_rate_per_min"],
        "smile_ratio": s["smile_ratio"], "framing": s["framing"],
        "framing_hint": framing_hint(s["framing"], report.framing_offset_hint, report.framing_small_face),
    }


def _missing(has_audio: bool, frames: list[dict[str, Any]], metrics: dict[str, Any],
             grade: dict[str, Any] | None) -> list[str]:
    """Signals that could not be measured, said plainly instead of scored."""
    out = []
    if not has_audio:
        out.append("no audio: no transcript, speech metrics or grade")
    elif not metrics.get("has_speech"):
        out.append("no speech detected: no pace, fillers or grade")
    if not frames:
        out.append("no video: no emotion or eye contact")
    elif not any(f["face"] for f in frames):
        out.append("no face found in any frame: no emotion or eye contact")
    else:
        judged = [f for f in frames if (f.get("gaze") or {}).get("eye_contact") is not None]
        if not judged:
            small = any(f.get("too_small") for f in frames)
            out.append("face too small to judge eye contact" if small else "eye contact not measured (no eyes found)")
        if not any((f.get("head") or {}).get("yaw") is not None for f in frames):
            out.append("no head pose in degrees (measured by the landmark face pipeline only)")
    return out
