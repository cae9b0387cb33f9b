"""An open answer's start and audio, stored while it is recorded (collection ``answer_audio``, through
the writer), so that any node can finish an answer whose node died: the orphan sweep claims it once
and re-transcribes what was captured. Kept a day (a TTL index on ``expires_at``: AUDIO_KEEP_SECONDS),
then gone; kept for good when the candidate consented (``AnswerStart.keep_audio``: re-analysis)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from bson.binary import Binary
from pymongo.errors import DuplicateKeyError

from pipeline.records import SAMPLE_RATE, AnswerStart
from pipeline.storage import AUDIO_KEEP_SECONDS

log = logging.getLogger(__name__)

COLLECTION = "answer_audio"
CLAIMS = "answer_claims"  # one document per recovered answer: whoever inserts it first recovers it
UNFINISHED = ("recording", "transcribing")  # answer statuses of an answer its node was still working on
CHUNK_SECONDS = 2.0  # a node that dies loses at most the audio of one unwritten chunk (+ the writer's flush)
MAX_CHUNK_SAMPLES = int(CHUNK_SECONDS * SAMPLE_RATE * 2)  # the schema's cap on one stored chunk

Write = Callable[[str, dict[str, Any]], Any]  # BatchedWriter.insert


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Open:
    start: AnswerStart
    seq: int = 0
    t_ms: int | None = None  # answer-clock time of the first buffered sample
    buffered: list[np.ndarray] | None = None
    samples: int = 0


class AudioSpool:
    """Writes each open answer's start, its audio in ``CHUNK_SECONDS`` chunks (16-bit PCM, 16 kHz) and its
    end as documents of ``answer_audio``. Thread-safe; writes go through ``write`` (the journaled writer)."""

    def __init__(self, write: Write, node: str, chunk_seconds: float = CHUNK_SECONDS,
                 clock: Callable[[], datetime] = _now) -> None:
        self._writer, self.node, self._clock = write, node, clock
        self._chunk = max(1, min(int(chunk_seconds * SAMPLE_RATE), MAX_CHUNK_SAMPLES))
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()

    @property
    def chunk_samples(self) -> int:
        """Samples per stored chunk (16 kHz)."""
        return self._chunk

    def start(self, start: AnswerStart) -> None:
        with self._lock:
            if start.answer_id in self._open:
                return  # started again: its chunks go on where they were
            self._open[start.answer_id] = _Open(start, buffered=[])
        self._write(COLLECTION, {"_id": f"{start.answer_id}:start", "kind": "start", **self._base(start),
                                 "start": {**asdict(start), "key_points": list(start.key_points),
                                           "hotwords": list(start.hotwords)}})

    def add(self, answer_id: str, t_ms: int, samples: np.ndarray) -> None:
        """Buffer audio (float32 in [-1, 1]); a full chunk is written at once."""
        ready: list[dict[str, Any]] = []
        with self._lock:
            a = self._open.get(answer_id)
            if a is None or a.buffered is None:
                return
            if a.t_ms is None:
                a.t_ms = int(t_ms)
            a.buffered.append(np.asarray(samples, np.float32))
            a.samples += len(samples)
            while a.samples >= self._chunk:
                ready.append(self._take(a, self._chunk))
        for doc in ready:
            self._write(COLLECTION, doc)

    def end(self, answer_id: str, ended_ms: int, status: str) -> None:
        """Write what is buffered and the end (its time and status); the answer is then forgotten here."""
        with self._lock:
            a = self._open.pop(answer_id, None)
            if a is None:
                return
            docs = [self._take(a, a.samples)] if a.samples else []
            a.seq += 1
            docs.append({"_id": f"{answer_id}:end", "kind": "end", **self._base(a.start),
                         "ended_ms": int(ended_ms), "status": status})
        for doc in docs:
            self._write(COLLECTION, doc)

    def _write(self, collection: str, doc: dict[str, Any]) -> None:
        try:
            self._writer(collection, doc)
        except Exception as exc:  # journal full, disk full: the live answer goes on, only its copy is short
            log.warning("answer %s: stored audio copy incomplete (%s)", doc.get("answer_id"), exc)

    def _take(self, a: _Open, n: int) -> dict[str, Any]:
        assert a.buffered is not None and a.t_ms is not None
        joined = np.concatenate(a.buffered)
        head, rest = joined[:n], joined[n:]
        a.buffered, a.samples = ([rest] if len(rest) else []), len(rest)
        pcm = (np.clip(head, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        doc = {"_id": f"{a.start.answer_id}:{a.seq:06d}", "kind": "audio", **self._base(a.start),
               "seq": a.seq, "t_ms": a.t_ms, "rate": SAMPLE_RATE, "pcm": Binary(pcm)}
        a.seq += 1
        a.t_ms += n * 1000 // SAMPLE_RATE
        return doc

    def _base(self, start: AnswerStart) -> dict[str, Any]:
        now = self._clock()
        expires = None if start.keep_audio else now + timedelta(seconds=AUDIO_KEEP_SECONDS)
        return {"answer_id": start.answer_id, "session_id": start.session_id, "node": self.node,
                "written_at": now, "expires_at": expires}


def keep_recording(write: Write, node: str, answer: dict[str, Any], audio: np.ndarray) -> None:
    """Keep a finished uploaded answer's audio (16 kHz float32, as analysed) the way a consenting live
    answer's is kept: start, chunks on the answer's own clock, end, none expiring; so it can be re-analysed.
    ``answer`` is its stored document. ``write`` should replace by ``_id``: a retried job writes the same ids."""
    start = AnswerStart(session_id=str(answer["session_id"]), answer_id=str(answer["_id"]),
                        index=int(answer.get("index") or 0), question=str(answer["question"]),
                        reference=str(answer.get("reference") or ""),
                        key_points=tuple(answer.get("key_points") or ()),
                        started_ms=int(answer.get("started_ms") or 0), keep_audio=True)
    spool = AudioSpool(write, node)
    spool.start(start)
    step = spool.chunk_samples
    for i in range(0, len(audio), step):
        spool.add(start.answer_id, start.started_ms + i * 1000 // SAMPLE_RATE, audio[i:i + step])
    ended = answer.get("ended_ms") or start.started_ms + len(audio) * 1000 // SAMPLE_RATE
    spool.end(start.answer_id, int(ended), str(answer.get("status") or "complete"))


# ---------------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class StoredAnswer:
    """What a dead node had captured of one answer: its start, its audio on the answer clock, its end."""

    start: AnswerStart
    t_ms: int  # answer-clock time of the first sample
    audio: np.ndarray  # float32, 16 kHz; gaps between chunks filled with silence
    ended_ms: int
    status: str  # the status the node ended it with, else "incomplete"


def orphaned_answers(db: Any, stale_seconds: float, now: datetime | None = None) -> list[str]:
    """Answers with stored audio, nothing written for ``stale_seconds``, no finished answer stored and no claim."""
    now = now or _now()
    cutoff = now - timedelta(seconds=stale_seconds)
    # Only answers of the recovery window: kept audio of finished answers piles up and is never an orphan.
    window = {"$lt": cutoff, "$gt": now - timedelta(seconds=AUDIO_KEEP_SECONDS)}
    started = [d["answer_id"] for d in db[COLLECTION].find({"kind": "start", "written_at": window},
                                                           {"answer_id": 1})]
    out = []
    for answer_id in started:
        last = db[COLLECTION].find_one({"answer_id": answer_id}, {"written_at": 1}, sort=[("written_at", -1)])
        if last is None or _aware(last["written_at"]) >= cutoff:
            continue  # still being written by a live node
        # the speech worker writes the answer ("recording") when it starts: only a finished one counts as stored
        finished = db.answers.find_one({"_id": answer_id, "status": {"$nin": list(UNFINISHED)}}, {"_id": 1})
        if finished or db[CLAIMS].find_one({"_id": answer_id}):
            continue
        out.append(answer_id)
    return out


def claim(db: Any, answer_id: str, node: str) -> bool:
    """Exactly one node wins an orphan: the claim is a plain insert on its ``_id`` (not journaled, it must
    be decided now)."""
    try:
        db[CLAIMS].insert_one({"_id": answer_id, "node": node, "claimed_at": _now()})
    except DuplicateKeyError:
        return False
    return True


def load(db: Any, answer_id: str) -> StoredAnswer | None:
    """The answer's start, audio and end as stored; None when its start is gone (expired or deleted)."""
    docs = list(db[COLLECTION].find({"answer_id": answer_id}))
    start_doc = next((d for d in docs if d.get("kind") == "start"), None)
    if start_doc is None:
        return None
    s = start_doc["start"]
    start = AnswerStart(session_id=str(s["session_id"]), answer_id=str(s["answer_id"]), index=int(s["index"]),
                        question=str(s["question"]), reference=str(s.get("reference") or ""),
                        key_points=tuple(s.get("key_points") or ()), started_ms=int(s.get("started_ms") or 0),
                        hotwords=tuple(s.get("hotwords") or ()))
    chunks = sorted((d for d in docs if d.get("kind") == "audio"), key=lambda d: d["seq"])
    audio, t0 = _join(chunks, start.started_ms)
    end = next((d for d in docs if d.get("kind") == "end"), None)
    last_ms = t0 + len(audio) * 1000 // SAMPLE_RATE
    return StoredAnswer(start, t0, audio, int(end["ended_ms"]) if end else last_ms,
                        str(end["status"]) if end else "incomplete")


def _join(chunks: Iterable[dict[str, Any]], default_t_ms: int) -> tuple[np.ndarray, int]:
    parts: list[np.ndarray] = []
    t0: int | None = None
    filled = 0  # samples placed so far
    for c in chunks:
        pcm = np.frombuffer(bytes(c["pcm"]), "<i2").astype(np.float32) / 32767.0
        t0 = int(c["t_ms"]) if t0 is None else t0
        at = (int(c["t_ms"]) - t0) * SAMPLE_RATE // 1000
        if at > filled:  # a chunk the writer lost: silence in its place keeps the clock
            parts.append(np.zeros(at - filled, np.float32))
            filled = at
        parts.append(pcm)
        filled += len(pcm)
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return audio, (t0 if t0 is not None else default_t_ms)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
