"""Sidecar end to end: cold vs warm first answer, and end of a 60 s answer to its stored grade.

Runs the real supervisor and worker processes against a SecantusDB server started here.
Cold = the models load when the first answer ends (what a system without warm-up pays);
warm = the same answer after warm-up at start, as MockAI does. Both measured in this run.

    python bench/bench_sidecar.py
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.media import load_audio  # noqa: E402
from pipeline.records import SAMPLE_RATE  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.storage import EmbeddedServer  # noqa: E402
from sidecar.protocol import AnswerEnd, AnswerStart, AudioChunk  # noqa: E402
from sidecar.supervisor import Sidecar  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
QUESTION = "Quote a famous line from a speech and say why it matters."
REFERENCE = "Ask not what your country can do for you, ask what you can do for your country. It asks for service."
KEY_POINTS = ("ask what you can do for your country", "service to the country")


def _answer_audio(seconds: float) -> np.ndarray:
    jfk = load_audio(DATA / "speech" / "jfk.flac")
    gap = np.zeros(8000, np.float32)
    reps = int(np.ceil(seconds * SAMPLE_RATE / (len(jfk) + len(gap))))
    return np.concatenate([np.concatenate([jfk, gap]) for _ in range(reps)])[: int(seconds * SAMPLE_RATE)]


def cold_vs_warm(settings: Settings, audio: np.ndarray) -> dict[str, float]:
    """In-process speech path, so the model load is timed exactly once."""
    from sidecar.workers import _SpeechLoop

    class _Events:
        def __init__(self) -> None:
            self.items: list = []

        def put(self, ev) -> None:
            self.items.append(ev)

    def run(loop: _SpeechLoop) -> float:
        answer = uuid.uuid4().hex
        t0 = int(time.time() * 1000)
        loop.handle(AnswerStart("bench", answer, 0, QUESTION, REFERENCE, KEY_POINTS, t0))
        for i in range(0, len(audio), 8000):
            loop.handle(AudioChunk(answer, t0 + i // 16, audio[i:i + 8000]))
        t = time.perf_counter()
        loop.handle(AnswerEnd(answer, t0 + len(audio) // 16))
        return time.perf_counter() - t

    from pipeline.encoder import SentenceEncoder
    from pipeline.grading import GradeOptions
    from sidecar.asr import SpeechRecognizer

    # Cold: nothing loaded before the answer ends; loading is part of the first feedback.
    recognizer = SpeechRecognizer(settings.asr)
    encoder = SentenceEncoder.from_settings(settings)
    loop = _SpeechLoop(settings, recognizer, encoder, GradeOptions.from_settings(settings), None, _Events())
    answer = uuid.uuid4().hex
    t0 = int(time.time() * 1000)
    # Everything (load, transcribing the whole answer, grading) is paid after the answer ends.
    cold_start = time.perf_counter()
    recognizer.load()
    encoder.encode(["load"])
    loop.handle(AnswerStart("bench", answer, 0, QUESTION, REFERENCE, KEY_POINTS, t0))
    for i in range(0, len(audio), 8000):
        loop.handle(AudioChunk(answer, t0 + i // 16, audio[i:i + 8000]))
    loop.handle(AnswerEnd(answer, t0 + len(audio) // 16))
    cold = time.perf_counter() - cold_start
    warm = min(run(loop) for _ in range(3))
    return {"cold_s": cold, "warm_s": warm}


def end_to_stored(settings: Settings, audio: np.ndarray) -> dict[str, float]:
    car = Sidecar(settings, store=True).start()
    t = time.perf_counter()
    assert car.wait_ready(300), car.status()
    start_s = time.perf_counter() - t
    times = []
    for _ in range(3):
        start = AnswerStart(uuid.uuid4().hex, uuid.uuid4().hex, 0, QUESTION, REFERENCE, KEY_POINTS,
                            int(time.time() * 1000))
        car.start_answer(start)
        for i in range(0, len(audio), 8000):
            car.push_audio(start.answer_id, start.started_ms + i // 16, audio[i:i + 8000])
        # Live, the worker transcribes while the candidate speaks: wait until it has caught up.
        while car.status()["workers"]["speech"].get("inbox_depth", 0) > 0:
            time.sleep(0.05)
        time.sleep(0.3)
        t = time.perf_counter()
        car.end_answer(start.answer_id, start.started_ms + len(audio) // 16)
        result = car.wait_result(start.answer_id, 120)
        assert result and result["stored"], result
        times.append(time.perf_counter() - t)
    recovery = {"hung_emotion_restart_s": _restart_after(car, "emotion", signal.SIGSTOP),
                "killed_speech_restart_s": _restart_after(car, "speech", signal.SIGKILL)}
    car.stop()
    return {"sidecar_ready_s": start_s, "end_to_stored_median_s": float(np.median(times)),
            "end_to_stored_max_s": max(times), **recovery}


def _restart_after(car: Sidecar, name: str, sig: signal.Signals) -> float:
    """Seconds from ``sig`` to the worker's restart (tests/test_sidecar.py checks that it happens and why)."""
    w = car.workers[name]
    restarts = w.restarts
    t = time.perf_counter()
    os.kill(w.process.pid, sig)
    while w.restarts == restarts:
        time.sleep(0.01)
    took = time.perf_counter() - t
    assert car.wait_ready(300), car.status()
    return took


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "db").start()
        try:
            settings = Settings(MONGODB_URI=server.uri, db_name="bench", data_dir=Path(tmp))
            audio60 = _answer_audio(60.0)
            audio15 = _answer_audio(15.0)
            cw = cold_vs_warm(settings, audio15)
            e2e = end_to_stored(settings, audio60)
        finally:
            server.stop()
    print("| measurement (2 cores, this run) | seconds | ratio |")
    print("|---|---:|---:|")
    print(f"| first answer (15 s), cold: models load at the end of the answer | {cw['cold_s']:.2f} | "
          f"{cw['cold_s'] / cw['warm_s']:.1f}x warm |")
    print(f"| first answer (15 s), warm: models warmed at start | {cw['warm_s']:.2f} | 1.0x |")
    print(f"| sidecar start to ready (both workers, load + warm-up) | {e2e['sidecar_ready_s']:.2f} | |")
    print(f"| end of a 60 s answer to stored grade, warm (median of 3) | {e2e['end_to_stored_median_s']:.2f} | |")
    print(f"| end of a 60 s answer to stored grade, warm (max of 3) | {e2e['end_to_stored_max_s']:.2f} | |")
    print(f"| hung emotion worker (SIGSTOP) to restarted, heartbeat timeout {settings.sidecar.heartbeat_timeout_seconds:g} s "
          f"| {e2e['hung_emotion_restart_s']:.2f} | |")
    print(f"| killed speech worker (SIGKILL) to restarted | {e2e['killed_speech_restart_s']:.2f} | |")


if __name__ == "__main__":
    main()
