"""K answers spoken at the same time through the real Sidecar: a pool of 1 speech worker vs a pool of N.

Each answer is a real recording (../shared/data/speech) fed at live pace (0.5 s chunks on the wall clock) by
its own thread, all ending together (the hardest case: every answer's tail, grade and STAR at once; ``--align
start``: all starting together); per answer it prints finish (``end_answer``) -> ``AnswerDone`` seconds and
the transcript's WER against the reference in ../shared/data/README.md. Both pools run in this one process
against a SecantusDB server started here, one after the other, and so does every K (1, 2 and N).

    python bench/bench_concurrent_answers.py [--workers N] [--repeats R] [--ks 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.evaluate import word_error_rate  # noqa: E402
from pipeline.media import load_audio  # noqa: E402
from pipeline.records import SAMPLE_RATE  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.storage import EmbeddedServer  # noqa: E402
from sidecar.protocol import AnswerDone, AnswerStart, WorkerEvent  # noqa: E402
from sidecar.speech_pool import node_cores, speech_worker_count  # noqa: E402
from sidecar.supervisor import Sidecar  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech"
CHUNK = SAMPLE_RATE // 2  # 0.5 s, as the live page sends it
# (name, file, channel, reference): the references of ../shared/data/README.md
CLIPS = [
    ("jfk", "jfk.flac", None, "And so my fellow Americans, ask not what your country can do for you, "
                              "ask what you can do for your country."),
    ("wizard", "stereo_diarization.wav", 0, "He began a confused complaint against the wizard, who had vanished "
                                            "behind the curtain on the left."),
    ("horizon", "stereo_diarization.wav", 1, "The horizon seems extremely distant."),
]
QUESTION = "Tell me about a speech or a story you remember."
REFERENCE = "A short account of the speech or story and why it stayed with you."


def _clips() -> list[tuple[str, np.ndarray, str]]:
    return [(name, load_audio(SPEECH / f, channel=ch), ref) for name, f, ch, ref in CLIPS]


def _speak(car: Sidecar, start: AnswerStart, audio: np.ndarray, t0: float, ends: dict[str, float]) -> None:
    """One candidate: audio at live pace from ``t0`` (perf_counter), then the end of the answer."""
    time.sleep(max(0.0, t0 - time.perf_counter()))
    for i in range(0, len(audio), CHUNK):
        due = t0 + (i + CHUNK) / SAMPLE_RATE  # a chunk is sent once it has been spoken
        time.sleep(max(0.0, due - time.perf_counter()))
        car.push_audio(start.answer_id, start.started_ms + i * 1000 // SAMPLE_RATE, audio[i:i + CHUNK])
    ends[start.answer_id] = time.perf_counter()
    car.end_answer(start.answer_id, start.started_ms + len(audio) * 1000 // SAMPLE_RATE)


def run_k(car: Sidecar, clips: list[tuple[str, np.ndarray, str]], k: int, done: dict[str, float],
          align: str = "end") -> list[dict[str, Any]]:
    """K answers at once (clips reused in turn past the three); per answer: worker, finish -> done, WER."""
    picks = [clips[i % len(clips)] for i in range(k)]
    now_ms = int(time.time() * 1000)
    starts = [AnswerStart(uuid.uuid4().hex, uuid.uuid4().hex, 0, QUESTION, REFERENCE, (), now_ms) for _ in picks]
    for s in starts:
        car.start_answer(s)
    owners = [car.speech_worker_of(s.answer_id) for s in starts]
    ends: dict[str, float] = {}
    t0 = time.perf_counter() + 0.5
    longest = max(len(audio) for _, audio, _ in picks) / SAMPLE_RATE
    threads = [threading.Thread(target=_speak, args=(
        car, s, audio, t0 + (longest - len(audio) / SAMPLE_RATE if align == "end" else 0.0), ends))
        for s, (_, audio, _) in zip(starts, picks, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = []
    for s, owner, (name, audio, ref) in zip(starts, owners, picks, strict=True):
        result = car.wait_result(s.answer_id, 600)
        if result is None:
            raise SystemExit(f"answer {name} got no result in 600 s: {car.status()}")
        rows.append({"clip": name, "seconds": len(audio) / SAMPLE_RATE, "worker": owner,
                     "finish_to_done_s": done[s.answer_id] - ends[s.answer_id],
                     "wer": word_error_rate(ref, result["transcript"]), "transcript": result["transcript"]})
    return rows


def bench_pool(settings: Settings, workers: int, ks: list[int], repeats: int,
               clips: list[tuple[str, np.ndarray, str]], align: str) -> dict[str, Any]:
    car = Sidecar(settings.model_copy(update={"sidecar": settings.sidecar.model_copy(
        update={"speech_workers": workers})}), store=True)
    done: dict[str, float] = {}

    def on_event(ev: WorkerEvent) -> None:
        if isinstance(ev, AnswerDone):
            done[ev.answer_id] = time.perf_counter()

    car.subscribe(on_event)
    t = time.perf_counter()
    car.start()
    try:
        if not car.wait_ready(600):
            raise SystemExit(f"the sidecar did not get ready: {car.status()}")
        ready_s = time.perf_counter() - t
        status = car.status()["workers"]
        rss = {n: status[n]["rss_mb"] for n in car.speech_names}
        warm = {n: status[n]["warm_up"]["total_s"] for n in car.speech_names}
        runs = {k: [row for _ in range(repeats) for row in run_k(car, clips, k, done, align)] for k in ks}
    finally:
        car.stop()
    return {"ready_s": ready_s, "rss_mb": rss, "warm_up_s": warm, "runs": runs}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    auto = speech_worker_count(0)
    ap.add_argument("--workers", type=int, default=max(2, auto),
                    help=f"N, the larger pool (default max(2, automatic) = {max(2, auto)} on this node)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each K per pool")
    ap.add_argument("--align", choices=("end", "start"), default="end",
                    help="answers end together (default) or start together")
    ap.add_argument("--ks", default="", help="the K values, comma-separated (default 1, 2 and N); past three "
                                             "answers the clips are reused in turn")
    args = ap.parse_args()
    n = args.workers
    ks = sorted({int(k) for k in args.ks.split(",")} if args.ks else {1, 2, n})
    clips = _clips()
    print(f"node: {node_cores()} cores, automatic pool = {auto}; answers {args.align} together, {args.repeats} "
          f"run(s) of each K; load before: {_load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "db").start()
        try:
            settings = Settings(MONGODB_URI=server.uri, db_name="bench_concurrent", data_dir=Path(tmp))
            pools = {p: bench_pool(settings, p, ks, args.repeats, clips, args.align) for p in sorted({1, n})}
        finally:
            server.stop()
    print(f"load after: {_load()}\n")
    print("| pool | ready (all workers) s | speech worker RSS MB | warm-up s |")
    print("|---:|---:|---|---|")
    for p, r in pools.items():
        print(f"| {p} | {r['ready_s']:.1f} | {', '.join(f'{v:.0f}' for v in r['rss_mb'].values())} | "
              f"{', '.join(f'{v:.1f}' for v in r['warm_up_s'].values())} |")
    print()
    big = pools[n]
    print(f"| K | answer | audio s | pool 1: finish -> feedback s | WER | pool {n}: worker | finish -> feedback s | WER |")
    print("|---:|---|---:|---:|---:|---|---:|---:|")
    for k in ks:
        for one, many in zip(pools[1]["runs"][k], big["runs"][k], strict=True):
            print(f"| {k} | {one['clip']} | {one['seconds']:.1f} | {one['finish_to_done_s']:.2f} | {one['wer']:.3f} | "
                  f"{many['worker']} | {many['finish_to_done_s']:.2f} | {many['wer']:.3f} |")
    for k in ks:
        worst = {p: max(row["finish_to_done_s"] for row in pools[p]["runs"][k]) for p in pools}
        print(f"K={k}: worst finish -> feedback " + ", ".join(f"pool {p}: {v:.2f} s" for p, v in worst.items()))


if __name__ == "__main__":
    main()
