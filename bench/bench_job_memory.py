"""A job worker's memory against the length of its recordings (issue 15, "a worker's memory stays flat").

    python bench/bench_job_memory.py [--long 600] [--no-video]

One real `python -m sidecar worker` (its warm sidecar: emotion and speech workers with the real models) on
SecantusDB and the embedded Redis, all started here on a temporary data folder. Jobs run one at a time, short to
long, then the short one again: for each, the peak RSS of the worker's whole process tree sampled from /proc every
100 ms while the job runs, and the tree's RSS once the worker is idle again (growth there would be a leak). Inputs
are real speech from ../shared/data (the speech files one after another, looped) and a real face video looped
with that speech, made with ffmpeg; a recording over the length cap is refused by the worker.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_jobs import (  # noqa: E402
    DB_NAME,
    QUESTION,
    REFERENCE,
    SHARED,
    Cluster,
    ffmpeg,
    seconds_of,
    two_minutes,
    uptime,
)
from bench.bench_memory import _status_kb, _tree  # noqa: E402
from pipeline import jobs  # noqa: E402
from pipeline.embedded_redis import EmbeddedRedis  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.storage import EmbeddedServer, client_for  # noqa: E402

MB = 1024.0


def speech_of(folder: Path, seconds: float) -> Path:
    """``seconds`` of real speech: the shared speech files one after another (bench_jobs), looped."""
    base = folder / "answer-2min.flac"
    if not base.exists():
        two_minutes(folder)
    out = folder / f"speech-{seconds:.0f}s.flac"
    ffmpeg("-stream_loop", "-1", "-i", str(base), "-t", f"{seconds:.2f}", str(out))
    return out


def video_of(folder: Path, speech: Path, seconds: float) -> Path:
    """The shared face clip looped for ``seconds``, 640 wide, with ``speech`` as its sound."""
    out = folder / f"video-{seconds:.0f}s.mp4"
    ffmpeg("-stream_loop", "-1", "-i", str(SHARED / "video" / "baseline.mp4"), "-i", str(speech), "-map", "0:v",
           "-map", "1:a", "-t", f"{seconds:.2f}", "-vf", "scale=640:-2", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", str(out))
    return out


def tree_rss_kb(root_pid: int) -> int:
    return sum(_status_kb(p, "VmRSS") for p in _tree(root_pid))


def run_job(celery: Any, db: Any, settings: Settings, pid: int, path: Path) -> dict[str, Any]:
    """Submit one job and sample the worker tree until it is finished; then the idle RSS."""
    from sidecar.job_queue import submit

    kind = "audio" if path.suffix in (".wav", ".flac", ".mp3") else "video"
    spec = jobs.JobSpec(owner="bench", question=QUESTION, reference=REFERENCE, candidate=f"mem-{path.stem}",
                        role="bench", source="batch", media_kind=kind, filename=path.name,
                        batch_id=f"mem-{time.monotonic_ns()}")
    before = tree_rss_kb(pid)
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        job_id = submit(celery, db, spec, fh, path.name, settings, size=path.stat().st_size).job["_id"]
    peak = before
    while True:
        peak = max(peak, tree_rss_kb(pid))
        job = db[jobs.COLLECTION].find_one({"_id": job_id}, {"status": 1, "error": 1, "result": 1})
        if job and job["status"] in jobs.FINISHED:
            break
        time.sleep(0.1)  # the sampling period of the peak, not a wait on a condition
    wall = time.perf_counter() - t0
    idle = tree_rss_kb(pid)
    result = job.get("result") or {}
    outcome = (f"{job['status']}: {(job.get('error') or '')[:90]}" if job["status"] != jobs.DONE
               else f"done, grade {result.get('grade') or 0:.2f}")
    return {"name": path.name, "seconds": seconds_of(path), "mb": path.stat().st_size / MB / MB,
            "before_mb": before / MB, "peak_mb": peak / MB, "idle_mb": idle / MB, "wall_s": wall, "outcome": outcome}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=float, default=900.0, help="the longest accepted audio, seconds (900: the default cap)")
    parser.add_argument("--no-video", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mockai-bm-"))  # short: the Redis socket path must fit 107 bytes
    server = EmbeddedServer(tmp / "db").start()
    redis = EmbeddedRedis(tmp / "redis").start()
    cluster = Cluster(tmp, server.uri, redis, {})
    try:
        media = tmp / "media"
        media.mkdir()
        settings = Settings(MONGODB_URI=server.uri, db_name=DB_NAME, data_dir=tmp, redis_url=redis.broker_url)
        cap = settings.media.max_answer_seconds
        lengths = [11.0, 120.0, args.long]
        audio = [speech_of(media, s) for s in lengths]
        over = speech_of(media, cap + 60.0)
        order = [audio[0], audio[1], audio[2]]
        if not args.no_video:
            order += [video_of(media, audio[0], 11.0), video_of(media, audio[1], 120.0)]
        order += [over, audio[0]]
        db = client_for(server.uri)[DB_NAME]
        from sidecar.job_queue import app_for

        celery = app_for(redis.broker_url)
        cluster.start_worker("mem")
        cluster.wait_ready(db, celery, ["mem"])
        pid = cluster.workers["mem"].pid
        print(f"load at start: {uptime()}; cap {cap:.0f} s; worker tree idle and warm {tree_rss_kb(pid) / MB:.0f} MB",
              flush=True)
        rows = []
        for path in order:
            row = run_job(celery, db, settings, pid, path)
            print(row, flush=True)
            rows.append(row)
        base = rows[0]["peak_mb"]
        print("\n| job (one worker, in this order) | media s | file MB | tree peak MB | peak vs 11 s audio |"
              " tree idle after MB | wall s | outcome |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            print(f"| {r['name']} | {r['seconds']:.0f} | {r['mb']:.1f} | {r['peak_mb']:,.0f} | "
                  f"{r['peak_mb'] / base:.2f}x | {r['idle_mb']:,.0f} | {r['wall_s']:.1f} | {r['outcome']} |")
        print(f"\nload at end: {uptime()}")
        return 0
    finally:
        cluster.stop()
        redis.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
