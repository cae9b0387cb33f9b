"""Command line: ``python -m sidecar analyze --video F --audio F --question Q --reference R --json``;
``python -m sidecar worker`` (a background-job worker); ``python -m sidecar batch --manifest FILE [--wait]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from pipeline.media import MediaError
from pipeline.settings import Settings, settings_error_text
from sidecar.analyze import AnalyzeRequest, analyze


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":  # background-job worker (Celery): sidecar/job_worker.py
        from sidecar.job_worker import main as worker_main

        return worker_main(argv[1:])
    if argv and argv[0] == "batch":  # submit a manifest of recordings as jobs: sidecar/batch.py
        from sidecar.batch import main as batch_main

        return batch_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sidecar", description="MockAI sidecar on recorded media")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="analyse one recorded answer (video and/or audio)")
    a.add_argument("--video", type=Path, help="video file (its audio track is used when --audio is not given)")
    a.add_argument("--audio", type=Path, help="audio file (any format, rate, channels)")
    a.add_argument("--question", required=True)
    a.add_argument("--reference", default="")
    a.add_argument("--key-point", action="append", default=[], dest="key_points")
    a.add_argument("--hotword", action="append", default=[], dest="hotwords", help="word hint for recognition")
    a.add_argument("--candidate", default="batch")
    a.add_argument("--role", default="custom")
    a.add_argument("--store", action="store_true", help="also store the session in MongoDB")
    a.add_argument("--json", action="store_true", help="print the report as JSON (default: a short summary)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    request = AnalyzeRequest(
        question=args.question, reference=args.reference, key_points=tuple(args.key_points),
        video=args.video, audio=args.audio, candidate=args.candidate, role=args.role,
        hotwords=tuple(args.hotwords),
    )
    try:
        settings = Settings()
    except ValidationError as exc:  # e.g. MOCKAI_ADMIN_PASSWORD set but too short: say so, run nothing
        print(f"error: {settings_error_text(exc)}", file=sys.stderr)
        return 2
    from pipeline.star import star_summary_lines

    try:
        report = analyze(request, settings, store=args.store)
    except MediaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        g = report["grade"] or {}
        print(f"transcript: {report['transcript']}")
        print(f"frames: {report['frames_summary']}")
        print(f"wpm: {report['metrics']['wpm']}  grade: {g.get('score')} ({g.get('band')})")
        for line in star_summary_lines(report.get("star")):
            print(line)
        for m in report["missing"]:
            print(f"missing: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
