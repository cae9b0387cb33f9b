"""Interview flow logic shared by the Interview page and the upload path (no Streamlit).

The page keeps only UI state; what a session and its answers are, and what the
candidate is told at the end, is decided here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.queries import with_rescores
from pipeline.questions import Question
from pipeline.settings import Settings
from sidecar.protocol import AnswerStart

CONSENT_TEXT = """\
**What MockAI records and keeps**

- Your camera and microphone are used **only while an answer is being recorded** (and during the
  device check, which stores nothing).
- Stored: your transcript with word timings, speech metrics (pace, fillers, pauses, pitch/energy),
  per-frame face measurements (face found, emotion probabilities, eye-contact and head-movement
  estimates) and the grade with its evidence.
- **Not stored: video.** Raw audio is kept only if you opt in below.
- Delete a session at any time from the Sessions page (or ask your coach): it removes every
  answer and sample of that session.
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def new_session_doc(candidate: str, role: str, question_set: str | None, settings: Settings,
                    source: str = "live", keep_audio: bool = False, coach: str | None = None) -> dict[str, Any]:
    return {
        "_id": uuid.uuid4().hex, "candidate": candidate.strip()[:200] or "anonymous", "role": role,
        "question_set": question_set, "coach": coach, "started_at": datetime.now(UTC), "status": "recording",
        "source": source, "consent": {"given_at": datetime.now(UTC), "keep_audio": keep_audio},
        "settings": settings.model_dump(mode="json", exclude={"mongodb_uri"}),
    }


def answer_start(session_id: str, index: int, question: Question, started_ms: int | None = None) -> AnswerStart:
    return AnswerStart(
        session_id=session_id, answer_id=uuid.uuid4().hex, index=index, question=question.question,
        reference=question.reference, key_points=tuple(question.key_points), started_ms=started_ms or now_ms(),
    )


@dataclass
class SessionSummary:
    answered: int
    graded: int
    mean_score: float | None
    band: str | None
    flags: list[str] = field(default_factory=list)
    incomplete: int = 0
    mean_wpm: float | None = None
    fillers: int = 0


def summarise(results: list[dict[str, Any]], band_cutoffs: tuple[float, float, float]) -> SessionSummary:
    """Overall grade = mean of the graded answers; ungraded ones are counted, never scored as zero."""
    from pipeline.grading import band_for

    scores = [r["grade"]["score"] for r in results if r.get("grade") and r["grade"].get("score") is not None]
    wpms = [r["metrics"]["wpm"] for r in results if r.get("metrics") and r["metrics"].get("wpm") is not None]
    flags = sorted({f for r in results for f in ((r.get("grade") or {}).get("flags") or [])})
    mean = sum(scores) / len(scores) if scores else None
    return SessionSummary(
        answered=len(results), graded=len(scores), mean_score=mean,
        band=band_for(mean, band_cutoffs) if mean is not None else None, flags=flags,
        incomplete=sum(1 for r in results if r.get("status") == "incomplete"),
        mean_wpm=sum(wpms) / len(wpms) if wpms else None,
        fillers=sum((r.get("metrics") or {}).get("filler_count") or 0 for r in results),
    )


def device_advice(stats: dict[str, Any], live_frame: dict[str, Any] | None, audio_level: float,
                  seconds_since_start: float) -> list[tuple[str, str]]:
    """Plain advice for the device check: (level, message) with level ok/warn/error."""
    out: list[tuple[str, str]] = []
    if stats.get("frames_seen", 0) == 0:
        if seconds_since_start > 8:
            out.append(("error", "No camera picture is arriving. Check that the browser may use the camera "
                                 "(the camera icon in the address bar) and that no other app holds it."))
        else:
            out.append(("warn", "Waiting for the camera…"))
    elif live_frame is not None:
        luma = live_frame.get("luma")
        if luma is not None and luma < 40:
            out.append(("warn", "The picture is very dark: turn on a light facing you."))
        if not live_frame.get("face"):
            out.append(("warn", "No face found: sit centred, facing the camera, about an arm's length away."))
        else:
            out.append(("ok", "Face found."))
    if stats.get("audio_seconds", 0) == 0:
        if seconds_since_start > 8:
            out.append(("error", "No microphone sound is arriving. Allow the microphone in the browser."))
    elif audio_level < 0.01:
        out.append(("warn", "Your microphone is silent: say a few words, check it is not muted."))
    else:
        out.append(("ok", "Microphone is picking up sound."))
    return out


def unfinished_session(db: Any, candidate: str, candidate_user: str | None = None) -> dict[str, Any] | None:
    """The candidate's latest live session that was never finished (reload, closed tab, lost connection).

    A signed-in candidate resumes only their own sessions; an anonymous one only anonymous sessions
    (``candidate_user`` None also matches a missing field), so typing someone's name reveals nothing.
    """
    name = str(candidate).strip()[:200]
    if not name:
        return None
    owner = str(candidate_user) if candidate_user else None
    return db.sessions.find_one({"candidate": name, "candidate_user": owner, "status": "recording",
                                 "source": "live", "questions": {"$exists": True}}, sort=[("started_at", -1)])


def resume_point(db: Any, session: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Index of the first question without a complete answer, and the answers already done."""
    done = with_rescores(db, list(db.answers.find({"session_id": str(session["_id"]), "status": "complete"})
                                  .sort("index", 1)))
    done_indexes = {a["index"] for a in done}
    n = len(session.get("questions") or [])
    index = next((i for i in range(n) if i not in done_indexes), n)
    return index, done
