"""The sidecar supervisor: owns the worker processes and everything they must not lose.

Lives in the app process (one per Streamlit server, shared by all sessions). It
creates the frame ring, starts the emotion worker and a pool of speech workers (spawn, all
at once; ``speech_workers``, each with its own inbox; ``sidecar.speech_pool``), and watches
their heartbeats: a worker that dies or stays silent longer than ``heartbeat_timeout_seconds``
is killed and restarted. Each answer stays on one speech worker for its whole life, the one
with the fewest open answers when it started. Audio of every answer in progress is kept here
until its worker reports the answer stored, and is replayed into that worker's replacement
after a crash, so a crash mid-answer loses no speech and touches no other worker's answers:
this is the one place an answer's audio is kept (the worker's transcriber drops what it has
transcribed).

What comes back from the workers is only what the live panel needs (typed events of
``sidecar.protocol``): the latest face status per session, partial words, and each answer's
summary; frame samples go to MongoDB, never through here (offline analysis asks for them with
``push_frame(collect=True)``).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import multiprocessing as mp
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.answer_audio import AudioSpool
from pipeline.records import SAMPLE_RATE
from pipeline.settings import Settings
from sidecar.protocol import (
    AnswerDone,
    AnswerEnd,
    AnswerSaved,
    AnswerStart,
    AnswerSummary,
    AudioChunk,
    FaceStatus,
    FramesFlushed,
    PartialWords,
    Ready,
    Shutdown,
    WorkerError,
    WorkerEvent,
    WorkerMetrics,
)
from sidecar.ring import COLLECT, FrameRing
from sidecar.speech_pool import (
    OpenAnswer,
    choose_worker,
    is_speech,
    pool_load,
    reassign,
    replay,
    rss_mb,
    speech_worker_count,
    speech_worker_names,
)
from sidecar.worker_state import WorkerState, start_process, worker_row
from sidecar.workers import drain, emotion_worker, speech_worker

log = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 180.0


class Sidecar:
    def __init__(self, settings: Settings, store: bool = True) -> None:
        self.settings = settings
        self.store = store
        self._ctx = mp.get_context("spawn")
        self.ring = FrameRing(settings.capture.ring_slots)
        self.events = self._ctx.Queue()
        self._settings_data = settings.model_dump(mode="json")
        self.speech_names = speech_worker_names(speech_worker_count(settings.sidecar.speech_workers))
        self.workers = {"emotion": WorkerState("emotion", emotion_worker),
                        **{n: WorkerState(n, speech_worker) for n in self.speech_names}}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every event handled
        self._open: dict[str, OpenAnswer] = {}
        self._done: dict[str, AnswerSummary] = {}
        self._partials: dict[str, list[dict[str, Any]]] = {}
        self._faces: dict[str, FaceStatus] = {}  # latest face status per session
        self._flushed: dict[str, FramesFlushed] = {}  # the last frame flush per answer
        self._listeners: list[Callable[[WorkerEvent], None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.audio_chunks_in = 0
        # Live answers' audio stored as it comes, so another node can finish one if this node dies
        # (pipeline.answer_audio; set by the app, None for offline analysis).
        self.spool: AudioSpool | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Sidecar:
        # This process also runs the WebRTC callbacks that feed the sidecar: with many busy
        # threads (page reruns, event pump, writer) a callback would otherwise wait up to the
        # default 5 ms per GIL hand-over, and for every full garbage collection (measured:
        # 60-500 ms each, more than one a second under load, over the ~120,000 objects of
        # Streamlit and its imports). Frozen, those are never scanned again.
        sys.setswitchinterval(self.settings.sidecar.gil_switch_ms / 1000.0)
        if self.settings.sidecar.gc_freeze:
            gc.collect()
            gc.freeze()
        for w in self.workers.values():
            self._spawn(w)
        atexit.register(self.stop)  # the app server exits: stop the workers, do not wait on their queues
        for target in (self._pump_events, self._watch):
            t = threading.Thread(target=target, name=f"sidecar-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait_ready(self, timeout: float = WARMUP_TIMEOUT_S) -> bool:
        with self._changed:  # notified by every event (Ready) and by the watcher (failed)
            self._changed.wait_for(lambda: self.ready or any(w.state == "failed" for w in self.workers.values()),
                                   timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        return all(w.state == "ready" for w in self.workers.values())

    def stop(self, timeout: float = 15.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for name in self.speech_names:
            with contextlib.suppress(Exception):
                self.workers[name].inbox.put(Shutdown())
        with contextlib.suppress(Exception):
            self.ring.put(np.zeros((1, 1, 3), np.uint8), 0, "", "__shutdown__")
        for w in self.workers.values():
            if w.process is not None:
                w.process.join(timeout)
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join()
            w.state = "stopped"
        for t in self._threads:
            t.join(2)
        # The workers are gone: unsent queue items must not block this process's exit.
        for q in [self.events] + [w.inbox for w in self.workers.values() if w.inbox is not None]:
            q.cancel_join_thread()
            q.close()
        self.ring.close()

    def _spawn(self, w: WorkerState) -> None:
        w.heartbeat = self._ctx.Value("d", time.time(), lock=False)
        speech = is_speech(w.name)
        args: tuple[Any, ...]
        if speech:
            with self._lock:  # the fresh inbox gets the replay first, then what comes in meanwhile
                w.inbox = self._ctx.Queue()  # fresh: a killed reader can leave the old one locked
                # Its own open answers only: the other workers' answers are not touched.
                replay(w.inbox, [a for a in self._open.values() if a.worker == w.name])
            args = (w.inbox, self.events, w.heartbeat, self._settings_data, self.store, w.name)
        else:
            args = (self.ring, self.events, w.heartbeat, self._settings_data, self.store)
        w.process = self._ctx.Process(target=w.target, args=args, name=f"mockai-{w.name}", daemon=True)
        w.state = "warming"
        w.started_at = time.monotonic()
        start_process(w.process)

    def restart(self, name: str, reason: str) -> None:
        w = self.workers[name]
        log.warning("restarting %s worker: %s", name, reason)
        with contextlib.suppress(Exception):
            w.process.kill()
            w.process.join(5)
        w.restarts += 1
        w.last_error = reason
        if name != "emotion":  # the frame ring needs nothing: it shares no lock with the worker
            drain(w.inbox)
            # Nobody reads the old inbox any more: never wait at exit to flush it into a full pipe.
            w.inbox.cancel_join_thread()
        self._spawn(w)

    def _watch(self) -> None:
        timeout = self.settings.sidecar.heartbeat_timeout_seconds
        while not self._stop.wait(0.25):
            self._end_stale_answers()
            for w in self.workers.values():
                if w.state in ("stopped", "failed"):
                    continue
                if not w.process.is_alive():
                    if w.state == "warming" and w.restarts >= 3:
                        with self._changed:
                            w.state = "failed"
                            if is_speech(w.name):  # its answers go on elsewhere, replayed from the start
                                for a in reassign(w.name, self.speech_names, self._open.values(), self._states()):
                                    replay(self.workers[a.worker].inbox, [a])
                            self._changed.notify_all()
                        continue
                    self.restart(w.name, f"process exited with code {w.process.exitcode}")
                elif w.state == "ready" and time.time() - w.heartbeat.value > timeout:
                    self.restart(w.name, f"no heartbeat for {timeout:.0f}s")
                elif w.state == "warming" and time.monotonic() - w.started_at > WARMUP_TIMEOUT_S:
                    self.restart(w.name, "warm-up took too long")

    def _end_stale_answers(self) -> None:
        """No audio for a while (tab closed, connection lost): keep what came, mark it incomplete."""
        now = time.monotonic()
        with self._lock:
            stale = [a for a in self._open.values()
                     if a.end is None and now - a.last_input > self.settings.sidecar.stale_answer_seconds]
        for a in stale:
            last_ms = a.chunks[-1].t_ms + len(a.chunks[-1].samples) * 1000 // SAMPLE_RATE if a.chunks else a.start.started_ms
            log.warning("answer %s got no audio for %.0fs: ending it as incomplete", a.start.answer_id,
                        self.settings.sidecar.stale_answer_seconds)
            self.end_answer(a.start.answer_id, last_ms, status="incomplete")

    # ------------------------------------------------------------------ events
    def _pump_events(self) -> None:
        while not self._stop.is_set():
            try:
                ev: WorkerEvent = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                break
            self._handle(ev)

    def _handle(self, ev: WorkerEvent) -> None:
        w = self.workers.get(ev.worker)
        with self._lock:
            if isinstance(ev, Ready) and w is not None:
                w.state = "ready"
                w.ready_timings = {"timings": ev.timings, "total_s": ev.total_s}
            elif isinstance(ev, WorkerMetrics) and w is not None:
                w.metrics = ev.data
            elif isinstance(ev, WorkerError) and w is not None:
                w.last_error = ev.error
            elif isinstance(ev, PartialWords):
                self._partials.setdefault(ev.answer_id, []).extend(ev.words)
            elif isinstance(ev, AnswerDone):
                # Stored (or handed back): the buffered audio can go. Held in the worker's memory
                # (journal full): keep the audio, so a restarted worker re-does the answer.
                if not ev.summary.get("held"):
                    self._open.pop(ev.answer_id, None)
                self._partials.pop(ev.answer_id, None)
                self._done[ev.answer_id] = ev.summary
                _forget_oldest(self._done)
            elif isinstance(ev, AnswerSaved):
                # An answer the full journal had refused is written now.
                self._open.pop(ev.answer_id, None)
                done = self._done.get(ev.answer_id)
                if done is not None:
                    done["held"], done["stored"] = False, ev.stored
                    done["journal_error"], done["journal_full"] = None, False
            elif isinstance(ev, FaceStatus):
                self._faces.pop(ev.session_id, None)
                self._faces[ev.session_id] = ev
                _forget_oldest(self._faces)
            elif isinstance(ev, FramesFlushed):
                self._flushed[ev.answer_id] = ev
                _forget_oldest(self._flushed)
            listeners = list(self._listeners)
            self._changed.notify_all()
        for fn in listeners:
            fn(ev)

    def subscribe(self, fn: Callable[[WorkerEvent], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    # ------------------------------------------------------------------ inputs
    def start_answer(self, start: AnswerStart, *, spool: bool = True) -> None:
        """``spool``: store its audio as it comes (``self.spool``); False for an answer recovered from there."""
        spool_to = self.spool if spool else None
        with self._lock:
            again = self._open.get(start.answer_id)  # started again: it starts over on the same worker
            name = again.worker if again is not None else choose_worker(self.speech_names, self._open.values(),
                                                                         self._states())
            self._open[start.answer_id] = OpenAnswer(start, worker=name, spooled=spool_to is not None)
            self._done.pop(start.answer_id, None)
            self.workers[name].inbox.put(start)
        if spool_to is not None:
            spool_to.start(start)

    def _states(self) -> dict[str, str]:
        return {n: self.workers[n].state for n in self.speech_names}

    def speech_worker_of(self, answer_id: str) -> str | None:
        """The speech worker that owns an open answer (None once it is stored, or never started)."""
        with self._lock:
            answer = self._open.get(answer_id)
            return answer.worker if answer is not None else None

    def push_audio(self, answer_id: str, t_ms: int, samples: np.ndarray) -> None:
        """Never drops: kept until the answer is stored, replayed after a worker restart.

        An answer whose audio passes ``max_answer_seconds`` is ended there; later audio is ignored.
        """
        chunk = AudioChunk(answer_id, int(t_ms), np.asarray(samples, np.float32))
        with self._lock:
            answer = self._open.get(answer_id)
            if answer is None or answer.end is not None:
                return
            answer.chunks.append(chunk)
            answer.samples += len(chunk.samples)
            answer.last_input = time.monotonic()
            self.audio_chunks_in += 1
            self.workers[answer.worker].inbox.put(chunk)
            spooled = answer.spooled
            if answer.samples > (self.settings.media.max_answer_seconds + 1.0) * SAMPLE_RATE:
                # A live answer is capped like a file (max_answer_seconds): memory must not grow with it.
                log.warning("answer %s reached max_answer_seconds: ending it", answer_id)
                self.end_answer(answer_id, int(t_ms) + len(chunk.samples) * 1000 // SAMPLE_RATE)
        if spooled and self.spool is not None:
            self.spool.add(answer_id, chunk.t_ms, chunk.samples)

    def push_frame(self, image: np.ndarray, t_ms: int, session_id: str, answer_id: str, block: bool = False,
                   collect: bool = False) -> bool:
        """``collect``: send this frame's sample back as a ``CollectedFrame`` event (offline analysis only)."""
        return self.ring.put(image, t_ms, session_id, answer_id, block=block, flags=COLLECT if collect else 0)

    def end_answer(self, answer_id: str, ended_ms: int, status: str = "complete",
                   capture: dict[str, Any] | None = None) -> None:
        with self._lock:
            answer = self._open.get(answer_id)
            if answer is None or answer.end is not None:
                return
            answer.end = AnswerEnd(answer_id, int(ended_ms), status, capture)
            self.workers[answer.worker].inbox.put(answer.end)
            spooled = answer.spooled
        if spooled and self.spool is not None:
            self.spool.end(answer_id, int(ended_ms), status)

    # ------------------------------------------------------------------ outputs
    def result(self, answer_id: str) -> AnswerSummary | None:
        """The answer's summary from the speech worker (``stored``: it is in MongoDB)."""
        with self._lock:
            return self._done.get(answer_id)

    def wait_result(self, answer_id: str, timeout: float = 60.0) -> AnswerSummary | None:
        with self._changed:
            self._changed.wait_for(lambda: answer_id in self._done, timeout)
            return self._done.get(answer_id)

    def flush_frames(self, session_id: str, answer_id: str, timeout: float = 30.0) -> FramesFlushed | None:
        """Wait until the emotion worker has analysed every frame of the answer put so far and written
        them to MongoDB (a flush marker queued behind them in the ring). None when it did not answer
        within ``timeout``; ``stored`` False when storing is off or the database is not taking writes."""
        with self._lock:
            self._flushed.pop(answer_id, None)  # an earlier flush says nothing about the frames put since
        if not self.ring.put_flush(session_id, answer_id, timeout=min(timeout, 5.0)):
            return None
        with self._changed:
            self._changed.wait_for(lambda: answer_id in self._flushed, timeout)
            return self._flushed.get(answer_id)

    def partial_words(self, answer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._partials.get(answer_id, []))

    def face_status(self, session_id: str) -> FaceStatus | None:
        """The latest face status of the session (for the device check and the live panel)."""
        with self._lock:
            return self._faces.get(session_id)

    def status(self) -> dict[str, Any]:
        """What the pages show: each worker's state, restarts, warm-up and stage latencies, queue depths, resident
        memory; per speech worker also its open answers and their queued audio seconds."""
        with self._lock:
            workers = {name: worker_row(w) for name, w in self.workers.items()}
            for name, load in pool_load(self.speech_names, self._open.values()).items():
                workers[name].update(open_answers=int(load["open_answers"]),
                                     queued_audio_s=round(load["queued_audio_s"], 2))
            open_audio_s = sum(a.samples for a in self._open.values()) / SAMPLE_RATE
            journal_errors = [w["journal_error"] for w in workers.values() if w["journal_error"]]
        for name, w in self.workers.items():
            workers[name]["rss_mb"] = rss_mb(w.process.pid) if workers[name]["alive"] else None
            if name in self.speech_names:
                with contextlib.suppress(NotImplementedError, OSError, AttributeError):
                    workers[name]["inbox_depth"] = w.inbox.qsize()
        return {"ready": self.ready, "workers": workers, "ring": self.ring.stats(),
                "speech_workers": len(self.speech_names),
                "open_answers": len(self._open), "buffered_audio_s": round(open_audio_s, 2),
                "audio_chunks_in": self.audio_chunks_in,
                "journal_backlog": sum(w["journal_backlog"] for w in workers.values()),
                "journal_dropped": sum(w["journal_dropped"] for w in workers.values()),
                "journal_full": any(w["journal_full"] for w in workers.values()),
                "journal_error": journal_errors[0] if journal_errors else None}


def _forget_oldest(d: dict[str, Any], keep: int = 500) -> None:
    """Bounded per-session and per-answer records: the oldest go first (a server runs for months)."""
    while len(d) > keep:
        d.pop(next(iter(d)))
