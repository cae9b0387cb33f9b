"""Benchmark of the Sessions page's list query on 10,000 stored sessions.

    python bench/bench_sessions.py [--sessions 10000] [--answers 3] [--runs 5]

Seeds a fresh database (a throwaway embedded SecantusDB, or ``MONGODB_URI`` when set)
with synthetic sessions shaped like the Interview page's: settings snapshot and the
asked questions included (~8 KB each), 100 candidates, 5 roles, 3 answers per session
(metrics and grade, no words). Then times ``list_session_page`` (page of 50 with its
answer counts) for the filters and sorts the page offers, ``count_sessions`` and the
filter pickers' options. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402

from pipeline.interview import new_session_doc  # noqa: E402
from pipeline.queries import (  # noqa: E402
    SESSION_ROW_FIELDS,
    SessionFilters,
    count_sessions,
    list_session_page,
    session_filter_options,
    session_sort,
)
from pipeline.questions import load_builtin_sets  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.storage import EmbeddedServer, ensure_indexes  # noqa: E402

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Ken", "Linus", "Margaret", "John"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Thompson", "Torvalds", "Hamilton", "McCarthy"]
ROLES = ["backend", "frontend", "data science", "product", "sre"]
BANDS = ((0.4, "weak"), (0.6, "fair"), (0.8, "good"), (1.01, "strong"))
SPACING = timedelta(minutes=53)  # 10,000 sessions span about a year, the newest just now


def synthetic_sessions(n: int, answers_per_session: int = 3, seed: int = 0,
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(sessions, answers) as the Interview page and the sidecar store them; the newest began now."""
    rng = np.random.default_rng(seed)
    t0 = datetime.now(UTC) - SPACING * n
    settings = Settings()
    qsets = load_builtin_sets()
    sessions: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for i in range(n):
        qset = qsets[i % len(qsets)]
        candidate = f"{FIRST[i % 10]} {LAST[(i // 10) % 10]}"
        doc = new_session_doc(candidate, ROLES[i % len(ROLES)], qset.id, settings,
                              coach=f"coach{i % 7}")
        grade = float(np.clip(rng.normal(0.62, 0.15), 0, 1)) if i % 23 else None
        doc.update({
            "_id": f"s{i:06d}", "candidate_user": candidate.lower().replace(" ", "."),
            "started_at": t0 + SPACING * (i + 1), "status": "complete" if grade is not None else "failed",
            "grade": grade, "band": next(b for cut, b in BANDS if grade < cut) if grade is not None else None,
            "flags": ["too_short"] if i % 11 == 0 else [],
            "questions": [q.to_dict() for q in qset.questions[:answers_per_session]],
        })
        sessions.append(doc)
        for k in range(answers_per_session):
            score = float(np.clip(rng.normal(0.62, 0.15), 0, 1))
            answers.append({
                "_id": f"{doc['_id']}-a{k}", "session_id": doc["_id"], "index": k, "status": "complete",
                "question": doc["questions"][k]["question"], "transcript": "so I built a cache and measured it",
                "metrics": {"wpm": float(rng.normal(140, 20)), "filler_count": int(rng.integers(0, 8)),
                            "fillers_per_minute": float(rng.uniform(0, 6)), "has_speech": True},
                "grade": {"score": score, "band": next(b for cut, b in BANDS if score < cut), "flags": []},
            })
    return sessions, answers


def _time(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--answers", type=int, default=3, help="answers per session")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import os

    server = None
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="bench_sessions_")) / "db").start()
        uri = server.uri
    client: pymongo.MongoClient = pymongo.MongoClient(uri, tz_aware=True)
    db = client[f"bench_sessions_{os.getpid()}"]
    try:
        ensure_indexes(db)
        sessions, answers = synthetic_sessions(args.sessions, args.answers)
        t = time.perf_counter()
        for i in range(0, len(sessions), 1000):
            db.sessions.insert_many(sessions[i : i + 1000], ordered=False)
        for i in range(0, len(answers), 2000):
            db.answers.insert_many(answers[i : i + 2000], ordered=False)
        seeded = time.perf_counter() - t
        last_page = (args.sessions - 1) // 50
        mid = datetime.now(UTC) - SPACING * (args.sessions // 2)
        day = (datetime.now(UTC) - timedelta(days=100)).date()
        coach_view = {"$or": [{"coach": "coach3"}, {"candidate_user": {"$in": ["ada.hopper", "alan.turing"]}}]}
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("newest first, page 1", lambda: list_session_page(db)),
            ("(reference: newest first, page 1, one unwindowed find)", lambda: list(
                db.sessions.find({}, SESSION_ROW_FIELDS).sort(session_sort("date")).limit(51))),
            (f"newest first, page {last_page + 1} (last)", lambda: list_session_page(db, page=last_page)),
            ("band = good, newest first", lambda: list_session_page(db, SessionFilters(band="good"))),
            ("candidate = Grace Hopper, by grade", lambda: list_session_page(
                db, SessionFilters(candidate="Grace Hopper"), sort="grade")),
            ("role + 60-day range, by candidate", lambda: list_session_page(
                db, SessionFilters(role="backend", date_from=mid.date(), date_to=mid.date() + timedelta(days=59)),
                sort="candidate")),
            ("search 'hop', newest first", lambda: list_session_page(db, SessionFilters(search="hop"))),
            ("all, by grade, page 2", lambda: list_session_page(db, sort="grade", page=1)),
            ("coach access filter, newest first", lambda: list_session_page(db, access=coach_view)),
            ("candidate access filter, newest first", lambda: list_session_page(
                db, access={"candidate_user": "ada.hopper"})),
            ("count, band = good", lambda: count_sessions(db, SessionFilters(band="good"))),
            ("filter options (candidates, roles)", lambda: session_filter_options(db)),
            ("date range (one day), newest first", lambda: list_session_page(
                db, SessionFilters(date_from=day, date_to=day))),
        ]
        print(f"{args.sessions:,} sessions (~{len(str(sessions[0])) / 1000:.0f} KB as text each), "
              f"{len(answers):,} answers, seeded in {seeded:.1f} s; {args.runs} runs each; "
              f"server: {'MONGODB_URI' if server is None else 'embedded SecantusDB'}\n")
        print("| query (page of 50 + answer counts) | rows | median (ms) | best (ms) |")
        print("|---|---:|---:|---:|")
        for name, fn in cases:
            med, best, out = _time(fn, args.runs)
            rows = (len(out.rows) if hasattr(out, "rows") else out if isinstance(out, int)
                    else len(out) if isinstance(out, list) else sum(map(len, out.values())))
            print(f"| {name} | {rows} | {med * 1000:.0f} | {best * 1000:.0f} |", flush=True)
    finally:
        client.drop_database(db.name)
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
