"""The pool of speech workers: how many, which one takes a new answer (sticky for its whole life), and the
open answers' audio, kept in the supervisor and replayed into its worker's replacement after a crash (or, once a
worker fails for good, into another worker)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import SAMPLE_RATE
from sidecar.protocol import AnswerEnd, AnswerStart, AudioChunk

SPEECH = "speech"  # the first speech worker keeps the single worker's name (its journal directory too)
AUTO_MAX_WORKERS = 8  # each worker holds its own Whisper model and sentence encoder (see BENCHMARKS.md)


@dataclass
class OpenAnswer:
    start: AnswerStart
    worker: str = SPEECH  # the speech worker that owns the answer (its transcriber state lives there)
    chunks: list[AudioChunk] = field(default_factory=list)
    end: AnswerEnd | None = None
    last_input: float = field(default_factory=time.monotonic)
    samples: int = 0  # audio kept in ``chunks`` (a running total: status() must not walk 30,000 chunks)
    spooled: bool = False  # its audio also goes to MongoDB (pipeline.answer_audio), for another node


def node_cores() -> int:
    """Cores this process may run on (a ``taskset`` or container CPU set counts, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def speech_worker_count(setting: int, cores: int | None = None) -> int:
    """``speech_workers``, or for 0 the node's cores minus one (the app process and the emotion worker need
    one), at least 1 and at most ``AUTO_MAX_WORKERS``."""
    if setting > 0:
        return setting
    return max(1, min(AUTO_MAX_WORKERS, (node_cores() if cores is None else cores) - 1))


def speech_worker_names(n: int) -> list[str]:
    """``speech``, ``speech-1``, ``speech-2``...: each name is also the worker's journal directory."""
    return [SPEECH] + [f"{SPEECH}-{i}" for i in range(1, n)]


def is_speech(name: str) -> bool:
    return name == SPEECH or name.startswith(SPEECH + "-")


def pool_load(names: Iterable[str], answers: Iterable[OpenAnswer]) -> dict[str, dict[str, float]]:
    """Per worker: open answers it owns and the audio seconds of theirs the supervisor holds."""
    load: dict[str, dict[str, float]] = {n: {"open_answers": 0, "queued_audio_s": 0.0} for n in names}
    for a in answers:
        if a.worker in load:
            load[a.worker]["open_answers"] += 1
            load[a.worker]["queued_audio_s"] += a.samples / SAMPLE_RATE
    return load


def choose_worker(names: list[str], answers: Iterable[OpenAnswer], states: Mapping[str, str]) -> str:
    """The worker for a new answer: a ready one before one warming up or restarting (a failed one only when
    nothing else is left), then the fewest open answers, then the fewest queued audio seconds, then pool order."""
    load = pool_load(names, answers)
    rank = {"ready": 0, "warming": 1, "restarting": 1, "stopped": 2, "failed": 3}

    def key(i_name: tuple[int, str]) -> tuple[int, float, float, int]:
        i, name = i_name
        return (rank.get(states.get(name, "stopped"), 2), load[name]["open_answers"],
                load[name]["queued_audio_s"], i)

    return min(enumerate(names), key=key)[1]


def reassign(failed: str, names: list[str], answers: Iterable[OpenAnswer], states: Mapping[str, str]) -> list[OpenAnswer]:
    """A worker that failed for good (it never warms up again): its open answers move to the others, each
    chosen as a new answer would be; the moved answers (empty when no other worker is left)."""
    others = [n for n in names if n != failed and states.get(n) != "failed"]
    answers = list(answers)
    moved = [a for a in answers if a.worker == failed] if others else []
    for a in moved:
        a.worker = choose_worker(others, answers, states)
    return moved


def replay(inbox: Any, answers: Iterable[OpenAnswer]) -> int:
    """Put each open answer's start, audio and end (when it has ended) on a fresh worker's inbox; the chunks
    put (answer order kept, so a transcript comes out as before the crash)."""
    n = 0
    for answer in answers:
        inbox.put(answer.start)
        for chunk in answer.chunks:
            inbox.put(chunk)
        n += len(answer.chunks)
        if answer.end is not None:
            inbox.put(answer.end)
    return n


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process (Linux ``/proc``); None where it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None
