"""Interview flow logic shared by the Interview page and the upload path (no Streamlit).

The page keeps only UI state; what a session and its answers are, and what the
candidate is told at the end, is decided here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pipeline.queries import list_answer_frames, list_report_answers, with_rescores
from pipeline.questions import Question
from pipeline.records import AnswerStart
from pipeline.settings import Settings

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
        "settings": settings.snapshot(),
    }


def answer_start(session_id: str, index: int, question: Question, started_ms: int | None = None,
                 keep_audio: bool = False) -> AnswerStart:
    return AnswerStart(
        session_id=session_id, answer_id=uuid.uuid4().hex, index=index, question=question.question,
        reference=question.reference, key_points=tuple(question.key_points), started_ms=started_ms or now_ms(),
        keep_audio=keep_audio,
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


class FaceReading(Protocol):
    """The latest face status of a session (the sidecar's ``FaceStatus``)."""

    @property
    def face(self) -> bool: ...

    @property
    def luma(self) -> float | None: ...


def device_advice(stats: Mapping[str, Any], face_status: FaceReading | None, audio_level: float,
                  seconds_since_start: float) -> list[tuple[str, str]]:
    """Plain advice for the device check: (level, message) with level ok/warn/error."""
    out: list[tuple[str, str]] = []
    if stats.get("frames_seen", 0) == 0:
        if seconds_since_start > 8:
            out.append(("error", "No camera picture is arriving. Check that the browser may use the camera "
                                 "(the camera icon in the address bar) and that no other app holds it."))
        else:
            out.append(("warn", "Waiting for the camera…"))
    elif face_status is not None:
        luma = face_status.luma
        if luma is not None and luma < 40:
            out.append(("warn", "The picture is very dark: turn on a light facing you."))
        if not face_status.face:
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


def stored_answer(db: Any, session_id: str, answer_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The answer as stored (re-scores applied, as the report reads it) and its frame samples;
    None while it is not in the database (feedback then says so instead of showing a score)."""
    answer = next((a for a in list_report_answers(db, session_id) if a.get("_id") == answer_id), None)
    if answer is None or answer.get("status") == "recording":
        return None
    return answer, list_answer_frames(db, session_id, answer_id)


# --------------------------------------------------------------------------- resuming

RESUME_PARAM = "resume"  # the Interview page's query parameter holding a resume token
RESUME_VERSION = "r1"
SESSION_ID_RE = re.compile(r"[0-9a-f]{32}")  # new_session_doc's ids
RESUME_INVALID = ("This resume link is not valid (it is incomplete or was altered), so nothing was resumed. "
                  "You can start a new session below.")
RESUME_EXPIRED = "This resume link has expired, so nothing was resumed. You can start a new session below."


class ResumeTokenError(ValueError):
    """A resume token was refused; the message is safe to show."""


def resume_secret(settings: Settings) -> bytes:
    """The key that signs resume tokens: ``resume_secret`` when set (several servers share it),
    else a random one generated once and kept owner-only in ``data_dir/secrets/resume.key``."""
    if settings.access.resume_secret is not None:
        return hashlib.sha256(settings.access.resume_secret.get_secret_value().encode("utf-8")).digest()
    return _file_secret(Path(settings.storage.data_dir).resolve() / "secrets" / "resume.key")


@lru_cache(maxsize=8)
def _file_secret(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # mkdir's mode does not apply to a folder that already existed
    if not path.exists():
        # Written whole under a private name, then linked into place: a concurrent process either
        # wins the link or reads the winner's key, and nobody ever reads a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    if len(key) < 32:
        raise ValueError(f"resume key file {path} is damaged: delete it to make a new one")
    return key


def _resume_signature(body: str, settings: Settings) -> str:
    digest = hmac.new(resume_secret(settings), body.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def resume_token(session_id: str, settings: Settings, now: datetime | None = None) -> str:
    """A signed token that lets the browser holding it resume ``session_id`` for ``resume_token_hours``."""
    sid = str(session_id)
    if not SESSION_ID_RE.fullmatch(sid):
        raise ValueError("not a session id")
    expires = int((now or datetime.now(UTC)).timestamp() + settings.access.resume_token_hours * 3600)
    body = f"{RESUME_VERSION}.{sid}.{expires}"
    return f"{body}.{_resume_signature(body, settings)}"


def resume_token_session(token: Any, settings: Settings, now: datetime | None = None) -> str:
    """The session id a valid, unexpired ``token`` names; ResumeTokenError otherwise."""
    if not isinstance(token, str) or len(token) > 200:
        raise ResumeTokenError(RESUME_INVALID)
    parts = token.split(".")
    if (len(parts) != 4 or parts[0] != RESUME_VERSION or not SESSION_ID_RE.fullmatch(parts[1])
            or not parts[2].isascii() or not parts[2].isdigit() or not parts[3].isascii()):
        raise ResumeTokenError(RESUME_INVALID)
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_resume_signature(body, settings), parts[3]):
        raise ResumeTokenError(RESUME_INVALID)
    if int(parts[2]) <= (now or datetime.now(UTC)).timestamp():
        raise ResumeTokenError(RESUME_EXPIRED)
    return parts[1]


def unfinished_session(db: Any, *, session_id: str | None = None,
                       candidate_user: str | None = None) -> dict[str, Any] | None:
    """A session that was started but never finished (reload, closed tab, lost connection).

    Never found by name: either the session a verified resume token names (``session_id``,
    from :func:`resume_token_session`), or the signed-in candidate's own latest one. A session
    that belongs to a candidate account resumes only for that account, token or not.
    """
    unfinished = {"status": "recording", "questions": {"$exists": True}}
    if session_id is not None:
        doc: dict[str, Any] | None = db.sessions.find_one({**unfinished, "_id": str(session_id)})
        owner = doc.get("candidate_user") if doc else None
        if doc is None or (owner and owner != candidate_user):
            return None
        return doc
    if candidate_user:
        latest: dict[str, Any] | None = db.sessions.find_one({**unfinished, "candidate_user": str(candidate_user)},
                                                             sort=[("started_at", -1)])
        return latest
    return None


def resume_point(db: Any, session: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Index of the first question without a complete answer, and the answers already done."""
    done = with_rescores(db, list(db.answers.find({"session_id": str(session["_id"]), "status": "complete"})
                                  .sort("index", 1)))
    done_indexes = {a["index"] for a in done}
    n = len(session.get("questions") or [])
    index = next((i for i in range(n) if i not in done_indexes), n)
    return index, done


def resume_step(session: Mapping[str, Any], index: int) -> str:
    """The page step a resumed session opens at: its next question (live or upload), or the summary."""
    if index >= len(session["questions"]):
        return "summary"
    return "upload" if session.get("source") == "upload" else "device"


def session_questions(stored: list[dict[str, Any]]) -> list[Question]:
    """The session's questions back from their stored dicts (``Question.to_dict``)."""
    return [Question(**{**q, "key_points": tuple(q["key_points"])}) for q in stored]
