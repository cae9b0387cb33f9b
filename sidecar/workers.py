"""The sidecar worker processes (one emotion worker, a pool of speech workers).

- emotion: reads sampled frames from the shared-memory ring, runs face detection,
  emotion and gaze, writes one ``frames`` sample per frame. The app gets only the latest
  face status per session (``FaceStatus``), and ``FramesFlushed`` at an answer's flush marker.
- speech (one per pool slot, each named and journaled apart: ``speech``, ``speech-1``...):
  reads answer commands and 16 kHz audio from its own inbox, transcribes while the candidate
  speaks, and at the end of an answer computes speech metrics and the grade and
  stores the answer. The answer's audio has one owner, the supervisor (it replays it into a
  restarted worker); the transcriber here keeps only what it has not transcribed yet.

Each runs its own loop in a spawned process, beats a shared heartbeat every turn,
and reports typed events (``sidecar.protocol.WorkerEvent``) on a queue.
Results go to MongoDB through the process's own journaled writer (when storing).
When the journal refuses a write (disk full, journal full), the worker keeps going and
holds the write in memory (``sidecar.journal_backlog.JournalBacklog``), retrying until it is journaled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.records import SAMPLE_RATE, FrameSample
from sidecar.heartbeat import Heartbeat
from sidecar.journal_backlog import JournalBacklog
from sidecar.protocol import (
    AnswerDone,
    AnswerEnd,
    AnswerSaved,
    AnswerStart,
    AnswerSummary,
    AudioChunk,
    CollectedFrame,
    FaceStatus,
    FramesFlushed,
    PartialWords,
    Ready,
    Shutdown,
    WorkerError,
    WorkerMetrics,
)
from sidecar.ring import RingFrame

log = logging.getLogger(__name__)

METRICS_EVERY_S = 1.0
FACE_STATUS_EVERY_S = 0.5  # the live panel redraws once a second; a change of face found is sent at once
FLUSH_TIMEOUT_S = 5.0


class _Latency:
    """Rolling per-stage latencies (ms) for the metrics the pages show."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, deque(maxlen=200)).append(seconds * 1000.0)

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, xs in self.samples.items():
            arr = np.fromiter(xs, float)
            out[stage] = {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)), "n": len(arr)}
        return out


def _open_store(settings_data: dict[str, Any], name: str) -> Any:
    from pipeline.settings import Settings
    from pipeline.store import Store

    return Store(Settings(**settings_data), writer_name=name)


def _lower_priority(niceness: int) -> None:
    # The emotion worker analyses as many sampled frames as it can (the ring drops the rest):
    # it must never starve the app process (WebRTC callbacks, aiortc's jitter buffers) or the
    # speech worker, which has to keep up with real time. So it takes what CPU is left.
    with contextlib.suppress(OSError):  # not allowed here: run at normal priority
        os.nice(int(niceness))


def _exit_with_parent() -> None:
    # A worker reads its queues forever; when the process that started it is SIGKILLed (a node or a job
    # worker dying) nobody would ever stop it. It leaves as soon as it has been re-parented.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _limit_threads(n: int) -> None:
    # Two workers share two cores: keep each library from spawning a thread per core.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


# ---------------------------------------------------------------------- emotion
def emotion_worker(ring: Any, events: Any, heartbeat: Any, settings_data: dict[str, Any], store: bool) -> None:
    _exit_with_parent()
    _lower_priority(settings_data["sidecar"]["emotion_worker_nice"])
    _limit_threads(1)
    from pipeline.settings import Settings
    from sidecar.emotion import EmotionAnalyzer

    settings = Settings(**settings_data)
    try:
        t0 = time.perf_counter()
        analyzer = EmotionAnalyzer(settings.emotion)
        timings = analyzer.warm_up()
        writer = _open_store(settings_data, "emotion").writer if store else None
        events.put(Ready("emotion", timings, time.perf_counter() - t0))
    except Exception as exc:
        events.put(WorkerError("emotion", f"warm-up failed: {exc}", trace=traceback.format_exc()))
        raise
    latency = _Latency()
    backlog = (JournalBacklog(writer, settings.sidecar.worker_backlog_max, settings.sidecar.worker_backlog_retry_seconds)
               if writer is not None else None)
    current_answer = None
    processed = 0
    faces = _FaceStatuses(events)
    last_metrics = time.monotonic()
    beat = Heartbeat(heartbeat, settings.sidecar.worker_stuck_seconds)
    while True:
        beat.progress()
        frame = ring.get(timeout=0.05)
        if frame is not None:
            if frame.answer_id == "__shutdown__":
                break
            if frame.flush_marker:
                events.put(FramesFlushed(frame.answer_id, _flush(backlog, writer), faces.analysed(frame.answer_id)))
                continue
            if frame.answer_id != current_answer:
                analyzer.reset()  # a new answer is a new track
                current_answer = frame.answer_id
            start = time.perf_counter()
            sample = analyzer.analyze(frame.image, frame.t_ms / 1000.0)
            latency.add("emotion", time.perf_counter() - start)
            doc = _frame_doc(frame, sample)
            if backlog is not None and not frame.answer_id.startswith("__"):  # "__preview__" is never stored
                backlog.insert("frames", doc, droppable=True)  # held in memory if the journal refuses it
            if frame.collect:
                events.put(CollectedFrame(doc))
            faces.seen(frame, doc)
            processed += 1
        if backlog is not None:
            backlog.retry()
        if time.monotonic() - last_metrics > METRICS_EVERY_S:
            last_metrics = time.monotonic()
            events.put(WorkerMetrics("emotion", {"latency": latency.summary(), "processed": processed,
                                                 **(backlog.status() if backlog is not None else {})}))
    if backlog is not None:
        _close_backlog(backlog, "emotion")
    if writer is not None:
        writer.close()
    events.cancel_join_thread()  # the supervisor may have stopped reading: exit anyway


class _FaceStatuses:
    """The latest face status per session, sent on a change of face found or every FACE_STATUS_EVERY_S;
    and how many frames of each recent answer were analysed."""

    keep = 200  # sessions and answers remembered (oldest forgotten first)

    def __init__(self, events: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.events = events
        self._clock = clock  # a test moves its own clock
        self._sent: dict[str, tuple[float, bool]] = {}
        self._analysed: dict[str, int] = {}

    def analysed(self, answer_id: str) -> int:
        return self._analysed.get(answer_id, 0)

    def seen(self, frame: RingFrame, doc: dict[str, Any]) -> None:
        self._analysed[frame.answer_id] = self._analysed.pop(frame.answer_id, 0) + 1
        face, now = bool(doc["face"]), self._clock()
        last = self._sent.get(frame.session_id)
        if last is None or last[1] != face or now - last[0] >= FACE_STATUS_EVERY_S:
            self._sent.pop(frame.session_id, None)
            self._sent[frame.session_id] = (now, face)
            self.events.put(FaceStatus(frame.session_id, frame.answer_id, int(frame.t_ms), face, float(doc["luma"])))
        for d in (self._sent, self._analysed):
            while len(d) > self.keep:
                d.pop(next(iter(d)))


def _flush(backlog: JournalBacklog | None, writer: Any) -> bool:
    """Everything analysed so far written to MongoDB? (False when not storing or not writable now.)"""
    if backlog is None or writer is None:
        return False
    return bool(backlog.retry(force=True) and writer.flush(timeout=FLUSH_TIMEOUT_S))


def _close_backlog(backlog: JournalBacklog, name: str) -> None:
    if not backlog.retry(force=True):
        log.error("%s worker stops with %d writes the journal never took (%s)", name, len(backlog), backlog.error)


def _frame_doc(frame: RingFrame, sample: FrameSample) -> dict[str, Any]:
    keep = ("face", "box", "emotions", "dominant", "confidence", "uncertain", "gaze", "head", "tracked",
            "framing", "eyes", "mouth", "aligned", "too_small")
    doc: dict[str, Any] = {k: sample.get(k) for k in keep}
    box = sample.get("box")
    if box is not None:
        doc["box"] = [int(v) for v in box]
    doc.update(
        {"_id": f"{frame.answer_id}-{frame.seq}-{frame.t_ms}", "session_id": frame.session_id,
         "answer_id": frame.answer_id, "t": int(frame.t_ms),
         # Mean brightness: "too dark" advice, and the flash in the alignment test.
         "luma": round(float(frame.image[::8, ::8].mean()), 1)}
    )
    return doc


# ---------------------------------------------------------------------- speech
class SpeechSession:
    """Everything the speech worker holds for one answer."""

    def __init__(self, start: AnswerStart, transcriber: Any, prosody: Any) -> None:
        self.start = start
        self.transcriber = transcriber
        # Pitch/energy as the audio arrives: no second copy of the answer's audio to concatenate.
        self.prosody = prosody  # pipeline.speech_metrics.ProsodyAccumulator
        self.first_ms: int | None = None


def speech_worker(inbox: Any, events: Any, heartbeat: Any, settings_data: dict[str, Any], store: bool,
                  name: str = "speech") -> None:
    _exit_with_parent()
    _limit_threads(int(settings_data["asr"]["threads"]))
    from pipeline.encoder import SentenceEncoder
    from pipeline.grading import GradeOptions
    from pipeline.settings import Settings
    from sidecar.asr import SpeechRecognizer

    settings = Settings(**settings_data)
    try:
        t0 = time.perf_counter()
        recognizer = SpeechRecognizer(settings.asr)
        asr_timings = recognizer.warm_up()
        encoder = SentenceEncoder.from_settings(settings)
        enc_timings = encoder.warm_up()
        writer = _open_store(settings_data, name).writer if store else None  # its own journal directory
        grade_options = GradeOptions.from_settings(settings)
        events.put(Ready(name, {"asr": asr_timings, "encoder": enc_timings}, time.perf_counter() - t0))
    except Exception as exc:
        events.put(WorkerError(name, f"warm-up failed: {exc}", trace=traceback.format_exc()))
        raise
    worker = _SpeechLoop(settings, recognizer, encoder, grade_options, writer, events, name)
    last_metrics = time.monotonic()
    beat = Heartbeat(heartbeat, settings.sidecar.worker_stuck_seconds)
    while True:
        beat.progress()
        try:
            msg = inbox.get(timeout=0.1)
        except queue.Empty:
            msg = None
        if isinstance(msg, Shutdown):
            break
        if msg is not None:
            try:
                worker.handle(msg)
            except Exception as exc:  # one bad answer must not take the worker down
                answer_id = getattr(msg, "answer_id", None)
                log.exception("speech worker failed on %s", type(msg).__name__)
                events.put(WorkerError(name, str(exc), answer_id=answer_id))
        if worker.backlog is not None:
            worker.backlog.retry()
        if time.monotonic() - last_metrics > METRICS_EVERY_S:
            last_metrics = time.monotonic()
            events.put(WorkerMetrics(name, {"latency": worker.latency.summary(),
                                                "open_answers": len(worker.answers),
                                                **(worker.backlog.status() if worker.backlog else {})}))
    if worker.backlog is not None:
        _close_backlog(worker.backlog, name)
    if writer is not None:
        writer.close()
    events.cancel_join_thread()  # the supervisor may have stopped reading: exit anyway


class _SpeechLoop:
    def __init__(self, settings: Any, recognizer: Any, encoder: Any, grade_options: Any, writer: Any, events: Any,
                 name: str = "speech"):
        from pipeline.speech_metrics import SpeechMetricsOptions

        self.settings = settings
        self.recognizer = recognizer
        self.encoder = encoder
        self.grade_options = grade_options
        self.metrics_options = SpeechMetricsOptions.from_settings(settings)
        self.asr_options = settings.asr
        self.writer = writer
        self.backlog = (JournalBacklog(writer, settings.sidecar.worker_backlog_max, settings.sidecar.worker_backlog_retry_seconds)
                        if writer is not None else None)
        self.events = events
        self.name = name  # the worker's name on every event it sends
        self.answers: dict[str, SpeechSession] = {}
        self.latency = _Latency()

    def handle(self, msg: Any) -> None:
        if isinstance(msg, AnswerStart):
            self.start(msg)
        elif isinstance(msg, AudioChunk):
            self.audio(msg)
        elif isinstance(msg, AnswerEnd):
            self.end(msg)

    def start(self, msg: AnswerStart) -> None:
        from sidecar.asr import StreamingTranscriber

        options = self.asr_options
        if msg.hotwords:
            options = options.model_copy(update={"hotwords": tuple(msg.hotwords)})
        from pipeline.speech_metrics import ProsodyAccumulator

        self.answers[msg.answer_id] = SpeechSession(msg, StreamingTranscriber(self.recognizer, options),
                                                    ProsodyAccumulator(SAMPLE_RATE, self.metrics_options))
        if self.backlog is not None:  # held in memory if the journal refuses it (never dropped)
            self.backlog.insert("answers", {
                "_id": msg.answer_id, "session_id": msg.session_id, "index": msg.index, "question": msg.question,
                "reference": msg.reference, "key_points": list(msg.key_points), "status": "recording",
                "started_ms": msg.started_ms or None,
            })

    def audio(self, msg: AudioChunk) -> None:
        session = self.answers.get(msg.answer_id)
        if session is None:
            return  # audio of an answer that already ended (late packet)
        if session.first_ms is None:
            session.first_ms = msg.t_ms
        session.prosody.feed(msg.samples)
        start = time.perf_counter()
        new_words = session.transcriber.feed(msg.samples, msg.t_ms)
        if new_words:
            self.latency.add("asr_chunk", time.perf_counter() - start)
            # Transcribed audio may go: the supervisor keeps the answer's audio (one owner) for a restart.
            session.transcriber.ack()
            self.events.put(PartialWords(msg.answer_id, new_words, worker=self.name))

    def end(self, msg: AnswerEnd) -> None:
        from pipeline.grading import grade
        from pipeline.speech_metrics import compute_speech_metrics
        from pipeline.star import star_for_answer

        session = self.answers.pop(msg.answer_id, None)
        if session is None:
            return
        timings: dict[str, float] = {}
        t = time.perf_counter()
        transcript = session.transcriber.finish()
        timings["asr_tail_s"] = time.perf_counter() - t
        samples = session.prosody.samples
        words = [_clean_word(w) for w in transcript.words]
        t = time.perf_counter()
        prosody = session.prosody.finish() if samples else None
        metrics = compute_speech_metrics(words, duration=samples / SAMPLE_RATE or None, options=self.metrics_options,
                                         prosody=prosody).as_dict()
        timings["metrics_s"] = time.perf_counter() - t
        t = time.perf_counter()
        s = session.start
        answer_grade, features = grade(self.encoder, s.question, s.reference, list(s.key_points),
                                       transcript.text, words, self.grade_options)
        timings["grade_s"] = time.perf_counter() - t
        t = time.perf_counter()
        star = star_for_answer(self.encoder, s.question, words,
                               pause_s=self.settings.grading.star_sentence_pause_seconds)
        timings["star_s"] = time.perf_counter() - t
        fields: AnswerSummary = {
            "status": msg.status, "ended_ms": msg.ended_ms, "transcript": transcript.text, "words": words,
            "metrics": metrics, "grade": answer_grade.to_dict(), "features": features.to_dict(), "star": star,
            "asr": {"engine": transcript.engine, "model": transcript.model, "language": transcript.language},
            "audio_started_ms": session.first_ms,
            "audio_seconds": round(samples / SAMPLE_RATE, 3),
        }
        if msg.capture:
            fields["capture"] = msg.capture
        t = time.perf_counter()
        stored = held = False
        journal_full, journal_error = False, None
        if self.backlog is not None:
            saved_later = lambda: self._saved_later(msg.answer_id, s.session_id)  # noqa: E731
            if self.backlog.update("answers", msg.answer_id, dict(fields), on_written=saved_later):
                stored = self.writer.flush(timeout=5.0)
            else:  # the journal refused it: kept in memory, written (and reported) once it can be
                held = True
                journal_full, journal_error = self.backlog.journal_full, self.backlog.error
        timings["store_s"] = time.perf_counter() - t
        for stage, secs in timings.items():
            self.latency.add(stage.removesuffix("_s"), secs)
        summary: AnswerSummary = {"answer_id": msg.answer_id, "session_id": s.session_id, "stored": stored,
                                  "held": held, "timings": timings, **fields}
        if held:
            summary["journal_full"], summary["journal_error"] = journal_full, journal_error
        self.events.put(AnswerDone(summary, worker=self.name))

    def _saved_later(self, answer_id: str, session_id: str) -> None:
        """A held answer reached the journal: send it and say so."""
        stored = self.writer.flush(timeout=5.0)
        self.events.put(AnswerSaved(answer_id, session_id, stored, worker=self.name))


def _clean_word(w: dict[str, Any]) -> dict[str, Any]:
    out = {"word": str(w["word"]).strip(), "start": round(max(0.0, float(w["start"])), 3),
           "end": round(max(0.0, float(w["end"])), 3)}
    p = w.get("probability")
    out["probability"] = None if p is None else round(min(1.0, max(0.0, float(p))), 4)
    for key in ("t_ms", "end_ms"):
        if key in w:
            out[key] = int(w[key])
    return out


def drain(q: Any) -> None:
    with contextlib.suppress(Exception):
        while True:
            q.get_nowait()
