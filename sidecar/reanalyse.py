"""Re-analysis of a stored answer from its kept audio (collection ``answer_audio``) with the current
models and settings: transcript, speech metrics, grade and STAR are replaced in place, on the answer's own
clock, so its frames and timeline still line up. Video is not kept, so expression and gaze stay as stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline import answer_audio
from pipeline.media import MediaError
from pipeline.records import SAMPLE_RATE
from pipeline.settings import Settings

CHUNK_S = 0.5
REPLACED = ("transcript", "words", "metrics", "grade", "features", "star", "asr", "audio_seconds")


def models_fingerprint(settings: Settings) -> str:
    """What decides a re-analysis' result: re-submitting with the same models and settings is a duplicate."""
    parts = {k: v for k, v in settings.snapshot().items() if not k.startswith(("health_", "node_"))}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def reanalysable(db: Any, session_id: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Stored answers whose audio is kept: their id, session, index and question."""
    query: dict[str, Any] = {"kind": "start"}
    if session_id is not None:
        query["session_id"] = session_id
    ids = [d["answer_id"] for d in db[answer_audio.COLLECTION].find(query, {"answer_id": 1}).limit(limit)]
    found = db.answers.find({"_id": {"$in": ids}, "status": {"$nin": list(answer_audio.UNFINISHED)}},
                            {"session_id": 1, "index": 1, "question": 1, "reference": 1, "key_points": 1})
    return list(found)


def reanalyse(db: Any, settings: Settings, answer_id: str, sidecar: Any,
              progress: Callable[[str, float], object] | None = None) -> dict[str, Any]:
    """Run the speech worker again over the kept audio of ``answer_id`` and store the new results."""
    stored = answer_audio.load(db, answer_id)
    if stored is None or not len(stored.audio):
        raise MediaError(f"answer {answer_id}: no kept audio",
                         public="This answer's audio was not kept (or has expired), so it cannot be re-analysed.")
    answer = db.answers.find_one({"_id": answer_id}, {"status": 1, "ended_ms": 1})
    if answer is None:
        raise MediaError(f"answer {answer_id} not found", public="This answer no longer exists.")
    start = stored.start
    sidecar.start_answer(start)
    step = int(CHUNK_S * SAMPLE_RATE)
    total = len(stored.audio)
    for i in range(0, total, step):
        sidecar.push_audio(answer_id, stored.t_ms + i * 1000 // SAMPLE_RATE, stored.audio[i:i + step])
        if progress is not None:
            progress("speech", 0.1 + 0.6 * min(1.0, (i + step) / total))
    ended_ms = int(answer.get("ended_ms") or stored.ended_ms)
    sidecar.end_answer(answer_id, ended_ms, status=str(answer.get("status") or stored.status))
    result = sidecar.wait_result(answer_id, timeout=300)
    if not result:
        raise RuntimeError(f"answer {answer_id}: the speech worker returned no result")
    now = datetime.now(UTC)
    fields = {k: result[k] for k in REPLACED if k in result}
    fields.update({"reanalysed_at": now, "reanalysis": {"fingerprint": models_fingerprint(settings),
                                                        "asr_model": settings.asr.model}})
    db.answers.update_one({"_id": answer_id}, {"$set": fields})
    db.answer_scores.delete_one({"_id": answer_id})  # a re-score of the old analysis no longer applies
    return {"transcript": result.get("transcript", ""), "grade": result.get("grade"), "reanalysed_at": now,
            "timings": result.get("timings", {})}
