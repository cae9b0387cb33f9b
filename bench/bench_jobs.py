"""Background jobs: batch throughput with 1 worker vs 2 (recordings per minute, real-time factor), and upload ->
feedback for a 2-minute recording through the queue vs the inline path the page used before (analyze in-process).

Everything real and started here on a temporary data folder: SecantusDB, the embedded Redis, `python -m sidecar
worker` processes (models warmed before timing), recordings cut from ../shared/data with ffmpeg. All in one run:

    python bench/bench_jobs.py [--recordings 6]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import jobs  # noqa: E402
from pipeline.embedded_redis import EmbeddedRedis  # noqa: E402
from pipeline.media import probe  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.storage import EmbeddedServer, client_for  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
QUESTION = "Tell me about a speech or a text you remember, and why it stayed with you."
REFERENCE = "Names the speech or text, says what it says, and explains why it mattered to the speaker."
DB_NAME = "bench_jobs"
# Workers at the app's own priority here: the inline path runs un-niced in this process, so both get the CPU alike.
WORKER_ENV = {"MOCKAI_JOB_WORKER_NICE": "0", "MOCKAI_JOB_HEARTBEAT_SECONDS": "1", "MOCKAI_FLUSH_SECONDS": "0.5"}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, timeout=300)


def audio_cut(src: Path, out: Path, start: float, seconds: float) -> Path:
    ffmpeg("-ss", f"{start:.2f}", "-t", f"{seconds:.2f}", "-i", str(src), "-vn", "-ac", "1", "-ar", "16000", str(out))
    return out


def video_with(face: Path, speech: Path, out: Path, start: float, seconds: float) -> Path:
    """A 640-wide video of a real face (looped) with ``seconds`` of real speech from ``start`` as its sound."""
    ffmpeg("-stream_loop", "-1", "-i", str(face), "-ss", f"{start:.2f}", "-i", str(speech), "-map", "0:v", "-map",
           "1:a", "-t", f"{seconds:.2f}", "-vf", "scale=640:-2", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", str(out))
    return out


def batch_media(folder: Path, n: int) -> list[Path]:
    """``n`` distinct recordings of 11-20 s, audio and video alternating."""
    speech, video = SHARED / "speech", SHARED / "video"
    jfk, multi = speech / "jfk.flac", speech / "multilingual.mp3"
    faces = [video / "baseline.mp4", video / "not_expressive.mp4"]
    out = []
    for i in range(n):
        src, start, seconds = (jfk, 0.0, 11.0) if i % 3 == 0 else (multi, float(7 * i % 40), 18.0)
        if i % 2 == 0:
            out.append(audio_cut(src, folder / f"rec{i:02d}.wav", start, seconds))
        else:
            out.append(video_with(faces[i % 2], src, folder / f"rec{i:02d}.mp4", start, seconds))
    return out


def two_minutes(folder: Path, seconds: float = 120.0) -> Path:
    """``seconds`` (120) of real speech: the four speech files of ../shared/data one after another, looped, as FLAC."""
    parts = ["jfk.flac", "multilingual.mp3", "stereo_diarization.wav", "hotwords.mp3"] * 2
    inputs = [a for p in parts for a in ("-i", str(SHARED / "speech" / p))]
    chains = "".join(f"[{i}:a]aresample=16000,pan=mono|c0=c0[a{i}];" for i in range(len(parts)))
    joined = "".join(f"[a{i}]" for i in range(len(parts)))
    out = folder / "answer-2min.flac"
    ffmpeg(*inputs, "-filter_complex", f"{chains}{joined}concat=n={len(parts)}:v=0:a=1[out]", "-map", "[out]",
           "-t", f"{seconds:.0f}", str(out))
    return out


def seconds_of(path: Path) -> float:
    info = probe(path)
    return float(info.duration or info.audio_duration or 0.0)


@dataclass
class Cluster:
    data_dir: Path
    mongo_uri: str
    redis: EmbeddedRedis
    workers: dict[str, subprocess.Popen[bytes]]

    def env(self) -> dict[str, str]:
        return {**os.environ, **WORKER_ENV, "MONGODB_URI": self.mongo_uri, "MOCKAI_DB_NAME": DB_NAME,
                "MOCKAI_DATA_DIR": str(self.data_dir), "MOCKAI_REDIS_URL": self.redis.broker_url,
                "PYTHONPATH": str(ROOT)}

    def start_worker(self, name: str) -> None:
        with (self.data_dir / f"worker-{name}.log").open("ab") as log:
            self.workers[name] = subprocess.Popen([sys.executable, "-m", "sidecar", "worker", "--name", name],
                                                  cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True)

    def wait_ready(self, db: Any, celery: Any, names: list[str], timeout: float = 600.0) -> None:
        """Models loaded (the worker list says ready) and each worker answering Celery's ping (consuming)."""
        deadline = time.monotonic() + timeout
        while True:
            for n in names:
                if self.workers[n].poll() is not None:
                    raise RuntimeError(f"worker {n} exited: see {self.data_dir / f'worker-{n}.log'}")
            states = {w["_id"]: w.get("state") for w in jobs.list_workers(db, fresh_seconds=60)}
            if all(states.get(n) in ("ready", "busy") for n in names):
                with contextlib.suppress(Exception):
                    replies = celery.control.ping(timeout=1.0) or []
                    answering = {h.split("@", 1)[0] for r in replies for h in r}
                    if set(names) <= answering:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {names} not ready in {timeout:.0f}s: {states}")
            time.sleep(0.5)

    def stop(self) -> None:
        for name in list(self.workers):
            proc = self.workers.pop(name)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def submit_all(celery: Any, db: Any, settings: Settings, paths: list[Path], batch_id: str) -> list[str]:
    from sidecar.job_queue import submit

    ids = []
    for i, path in enumerate(paths):
        kind = "audio" if path.suffix in (".wav", ".flac", ".mp3") else "video"
        spec = jobs.JobSpec(owner="bench", question=QUESTION, reference=REFERENCE, candidate=f"bench-{i}",
                            role="bench", source="batch", media_kind=kind, filename=path.name, batch_id=batch_id)
        with path.open("rb") as fh:
            ids.append(submit(celery, db, spec, fh, path.name, settings, size=path.stat().st_size).job["_id"])
    return ids


def wait_done(db: Any, ids: list[str], timeout: float = 3600.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = list(db[jobs.COLLECTION].find({"_id": {"$in": ids}}, {"history": 0}))
        if len(found) == len(ids) and all(j["status"] in jobs.FINISHED for j in found):
            failed = [(j["_id"], j.get("error")) for j in found if j["status"] != jobs.DONE]
            if failed:
                raise RuntimeError(f"jobs did not finish: {failed}")
            return found
        if time.monotonic() > deadline:
            raise RuntimeError("jobs not done in time")
        time.sleep(0.2)  # a benchmark's poll of the database: the figure is the wall time, not this


def batch_round(celery: Any, db: Any, settings: Settings, paths: list[Path], media_s: float, workers: int) -> dict:
    t0 = time.perf_counter()
    ids = submit_all(celery, db, settings, paths, batch_id=f"bench-{workers}w-{uuid.uuid4().hex[:6]}")
    done = wait_done(db, ids)
    wall = time.perf_counter() - t0
    per_worker: dict[str, int] = {}
    for j in done:
        per_worker[j["worker"]] = per_worker.get(j["worker"], 0) + 1
    return {"workers": workers, "n": len(paths), "media_s": media_s, "wall_s": wall,
            "per_min": len(paths) / wall * 60, "rtf": media_s / wall, "per_worker": per_worker,
            "analysis_s": [round((j.get("result") or {}).get("analysis_s") or 0.0, 1) for j in done]}


def queue_once(celery: Any, db: Any, settings: Settings, path: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    ids = submit_all(celery, db, settings, [path], batch_id=f"bench-long-{uuid.uuid4().hex[:6]}")
    job = wait_done(db, ids)[0]
    return time.perf_counter() - t0, job


def inline_once(settings: Settings, car: Any, db: Any, path: Path) -> tuple[float, dict[str, Any]]:
    """Today's inline path: analyze with a warm sidecar, store=True, until the answer is stored complete."""
    from sidecar.analyze import AnalyzeRequest, analyze

    t0 = time.perf_counter()
    report = analyze(AnalyzeRequest(QUESTION, REFERENCE, (), audio=path, candidate="bench-inline", role="bench"),
                     settings, store=True, sidecar=car)
    while db.answers.find_one({"_id": report["answer_id"], "status": "complete"}, {"_id": 1}) is None:
        time.sleep(0.05)
    return time.perf_counter() - t0, report


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=6)
    parser.add_argument("--long-seconds", type=float, default=120.0, help="length of the upload->feedback one")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mockai-bj-"))  # short: the Redis socket path must fit 107 bytes
    server = EmbeddedServer(tmp / "db").start()
    redis = EmbeddedRedis(tmp / "redis").start()
    cluster = Cluster(tmp, server.uri, redis, {})
    try:
        media = tmp / "media"
        media.mkdir()
        paths = batch_media(media, args.recordings)
        long = two_minutes(media, args.long_seconds)
        media_s, long_s = sum(seconds_of(p) for p in paths), seconds_of(long)
        settings = Settings(MONGODB_URI=server.uri, db_name=DB_NAME, data_dir=tmp, redis_url=redis.broker_url)
        db = client_for(server.uri)[DB_NAME]
        from sidecar.job_queue import app_for

        celery = app_for(redis.broker_url)
        print(f"load at start: {uptime()}", flush=True)
        print(f"{len(paths)} recordings, {media_s:.1f} s of media ({', '.join(p.name for p in paths)}); "
              f"long recording {long_s:.1f} s", flush=True)

        cluster.start_worker("w1")
        cluster.wait_ready(db, celery, ["w1"])
        one = batch_round(celery, db, settings, paths, media_s, 1)
        print(f"1 worker: {one}", flush=True)
        q_s, q_job = queue_once(celery, db, settings, long)  # w1 warm and idle
        print(f"queue 2-min: {q_s:.1f}s (worker's analysis {q_job['result'].get('analysis_s')}s)", flush=True)

        cluster.start_worker("w2")
        cluster.wait_ready(db, celery, ["w1", "w2"])
        two = batch_round(celery, db, settings, paths, media_s, 2)
        print(f"2 workers: {two}", flush=True)
        cluster.stop()  # the inline path alone on the machine, as the queue path was

        from sidecar.supervisor import Sidecar

        one_speech = settings.model_copy(update={"sidecar": settings.sidecar.model_copy(update={"speech_workers": 1})})
        car = Sidecar(one_speech, store=True).start()
        try:
            if not car.wait_ready(600):
                raise RuntimeError(f"sidecar not ready: {car.status()['workers']}")
            inline_once(one_speech, car, db, paths[0])  # warm like the worker, which had run jobs before
            i_s, i_report = inline_once(one_speech, car, db, long)
        finally:
            car.stop()
        print(f"inline 2-min: {i_s:.1f}s (analyze total {i_report['timings'].get('total_s')}s)", flush=True)
        load_end = uptime()

        print("\n| workers | recordings | media s | wall s | recordings / min | real-time factor | jobs per worker |")
        print("|---|---|---|---|---|---|---|")
        for r in (one, two):
            split = ", ".join(f"{k}: {v}" for k, v in sorted(r["per_worker"].items()))
            print(f"| {r['workers']} | {r['n']} | {r['media_s']:.1f} | {r['wall_s']:.1f} | {r['per_min']:.2f} | "
                  f"{r['rtf']:.2f} | {split} |")
        print(f"\n2 workers / 1 worker throughput: {two['per_min'] / one['per_min']:.2f}x")
        print(f"\n| {long_s:.0f} s recording, upload -> feedback | seconds | real-time factor |")
        print("|---|---|---|")
        print(f"| through the queue (submit -> job done, warm worker) | {q_s:.1f} | {long_s / q_s:.2f} |")
        print(f"| inline (analyze in-process, warm sidecar, store=True) | {i_s:.1f} | {long_s / i_s:.2f} |")
        print(f"\nqueue / inline: {q_s / i_s:.2f}x; load at end: {load_end}")
        return 0
    finally:
        cluster.stop()
        redis.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
