"""``python -m sidecar batch --manifest FILE | --folder DIR [--wait]``: check a batch of recordings, keep
each in MongoDB and queue one analysis job per row (workers: ``python -m sidecar worker``); --wait follows them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pipeline import jobs
from pipeline.job_inputs import store_path
from pipeline.job_manifest import Manifest, QuestionChoice, outcome, parse_manifest, scan_folder, specs_for
from pipeline.settings import Settings

POLL_SECONDS = 1.0
NO_WORKER_SECONDS = 60.0
NO_WORKER = ("No worker has started any of these jobs in {s:.0f} s: nothing here runs them. Start one with "
             "`python -m sidecar worker` (same MONGODB_URI, MOCKAI_DATA_DIR / MOCKAI_REDIS_URL); the jobs wait.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sidecar batch",
                                description="Queue a batch of recorded answers for background analysis")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, help="CSV: file,candidate,question_set,question,reference,"
                     "key_points,media (file relative to the manifest's folder)")
    src.add_argument("--folder", type=Path, help="every recording directly in this folder, one question for all")
    p.add_argument("--question", default="", help="--folder: the question's text")
    p.add_argument("--question-set", default=None, help="--folder: a shipped question set id")
    p.add_argument("--question-number", type=int, default=None, help="--folder: 1-based number in --question-set")
    p.add_argument("--reference", default="", help="--folder with --question: a reference answer")
    p.add_argument("--key-point", action="append", default=[], dest="key_points", help="--folder: a key point")
    p.add_argument("--owner", default="cli", help="who the jobs belong to (queue bound, Batch page filter)")
    p.add_argument("--wait", action="store_true", help="follow the jobs until they end; exit 1 if any failed")
    return p


def load(args: argparse.Namespace, settings: Settings) -> Manifest:
    mb, items = settings.media.max_upload_mb, settings.jobs.max_batch_items
    if args.folder is not None:
        if bool(args.question) == bool(args.question_set):
            return Manifest(problems=["--folder needs one question: --question TEXT, or --question-set ID "
                                      "with --question-number N"])
        if args.question_set and args.question_number is None:
            return Manifest(problems=["--question-set needs --question-number (1-based)"])
        choice = QuestionChoice(question=args.question, question_set=args.question_set, number=args.question_number,
                                reference=args.reference, key_points=tuple(args.key_points))
        return scan_folder(args.folder, args.owner, choice, max_upload_mb=mb, max_batch_items=items)
    path: Path = args.manifest
    try:
        content = path.read_bytes()
    except OSError as exc:
        return Manifest(problems=[f"the manifest {str(path)!r} cannot be read ({exc.strerror or exc})"])
    return parse_manifest(content, args.owner, folder=path.resolve().parent, max_upload_mb=mb, max_batch_items=items)


def submit_all(db: Any, celery: Any, manifest: Manifest, owner: str, settings: Settings,
               out: TextIO) -> tuple[list[str], int]:
    """Keep each row's file and record its job, sending it when new; (job ids, rows that failed)."""
    from pipeline.uploads import UploadTooLargeError
    from sidecar.job_queue import send

    ids: list[str] = []
    failed = 0
    for row, spec in zip(manifest.rows, specs_for(manifest.rows, owner, manifest.batch_id), strict=True):
        assert row.path is not None
        try:
            media = store_path(db, row.path, settings.media.max_upload_mb)
        except (OSError, UploadTooLargeError) as exc:
            print(f"line {row.line}: {row.file}: not stored ({exc})", file=out)
            failed += 1
            continue
        submitted = jobs.submit(db, spec, media, settings.jobs.max_attempts)
        job_id = str(submitted.job["_id"])
        ids.append(job_id)
        state = outcome(submitted)
        if submitted.needs_sending and not send(celery, db, job_id):
            state += " (Redis unreachable now: a worker sends it once Redis is back)"
        print(f"{job_id}  {state:<10}  line {row.line}: {row.file}", file=out)
    return ids, failed


def counts_of(db: Any, ids: list[str]) -> dict[str, int]:
    """How many of these jobs are in each state (the batch's own ones: an older copy of a row whose file
    changed since is in the same batch but not followed)."""
    out = dict.fromkeys(jobs.STATES, 0)
    match = {"_id": {"$in": ids}}
    for row in db[jobs.COLLECTION].aggregate([{"$match": match}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
        out[str(row["_id"])] = int(row["n"])
    return out


def follow(db: Any, ids: list[str], out: TextIO, poll: float = POLL_SECONDS,
           no_worker_after: float = NO_WORKER_SECONDS, clock: Callable[[], float] = time.monotonic) -> dict[str, int]:
    """A progress bar over the jobs until every one has ended (done, failed, cancelled); the final counts."""
    from tqdm import tqdm

    started = clock()
    warned = False
    with tqdm(total=len(ids), unit="job", file=out, desc="analysed", dynamic_ncols=True) as bar:
        while True:
            counts = counts_of(db, ids)
            ended = sum(counts[s] for s in jobs.FINISHED)
            bar.n = ended
            bar.set_postfix({s: counts[s] for s in (jobs.RUNNING, jobs.RETRYING, jobs.FAILED) if counts[s]},
                            refresh=False)
            bar.refresh()
            if ended >= len(ids):
                return counts
            if not warned and clock() - started > no_worker_after and _none_started(db, ids):
                bar.write(NO_WORKER.format(s=no_worker_after), file=out)
                warned = True
            time.sleep(poll)


def _none_started(db: Any, ids: list[str]) -> bool:
    return bool(db[jobs.COLLECTION].count_documents({"_id": {"$in": ids}, "attempts": {"$gt": 0}}, limit=1) == 0)


def summary(db: Any, ids: list[str], out: TextIO) -> int:
    """One line per job (file, status, grade, band, error); 0 when all are done, 1 otherwise."""
    found = {d["_id"]: d for d in db[jobs.COLLECTION].find({"_id": {"$in": ids}}, {"history": 0})}
    rows = []
    for job_id in ids:
        job = found.get(job_id, {})
        result = job.get("result") or {}
        grade = result.get("grade")
        rows.append((str((job.get("spec") or {}).get("filename", job_id)), str(job.get("status", "missing")),
                     "" if grade is None else f"{grade:.2f}", str(result.get("band") or ""),
                     str(job.get("error") or "")))
    head = ("file", "status", "grade", "band", "error")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(4)]
    for r in [head, *rows]:
        print(("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]).rstrip(), file=out)
    return 0 if rows and all(r[1] == jobs.DONE for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from pydantic import ValidationError

    from pipeline.embedded_db import StorageError
    from pipeline.embedded_redis import RedisStartError
    from pipeline.settings import settings_error_text
    from pipeline.store import Store
    from sidecar.job_queue import app_for, broker_url

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: {settings_error_text(exc)}", file=sys.stderr)
        return 2
    manifest = load(args, settings)
    if manifest.problems:
        print(f"nothing submitted: {len(manifest.problems)} problem(s) to fix first", file=sys.stderr)
        for problem in manifest.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    store = Store(settings, writer_name="batch")
    try:
        db = store.get_db()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        store.close()
        return 2
    try:
        try:
            jobs.check_queue_room(db, args.owner, settings.jobs.max_queued_per_user, adding=len(manifest.rows))
        except jobs.QueueFullError as exc:
            print(f"nothing submitted: {exc} (this batch has {len(manifest.rows)})", file=sys.stderr)
            return 2
        try:
            celery = app_for(broker_url(settings))
        except (RedisStartError, ValueError) as exc:  # the embedded broker cannot start; a bad URL
            print(f"nothing submitted: the job queue is unavailable: {exc}", file=sys.stderr)
            return 2
        print(f"batch {manifest.batch_id}: {len(manifest.rows)} recording(s) for {args.owner}")
        ids, failed = submit_all(db, celery, manifest, args.owner, settings, sys.stdout)
        if not args.wait:
            where = ("the embedded Redis under the data folder keeps them until a worker on that folder runs"
                     if not settings.jobs.redis_url else "they wait in Redis for a worker")
            print(f"Queued: {where} (python -m sidecar worker, or the app's own workers). Follow them on the "
                  "Batch page or with --wait.")
            return 1 if failed else 0
        follow(db, ids, sys.stderr)
        return max(summary(db, ids, sys.stdout), 1 if failed else 0)
    finally:
        store.close()
