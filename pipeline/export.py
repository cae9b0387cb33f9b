"""Export, share and delete one session. No Streamlit here.

- ``session_html``: one self-contained HTML document (header, then per answer its
  aligned timeline and feedback card); plotly.js is inlined once, before the first
  figure, so the file opens offline. The cards render from the same view-model as the
  pages (``pipeline.card.AnswerCard``); all stored text goes through ``safe_text.plain_html``.
- ``samples_csv`` / ``samples_json``: the underlying samples (answers with words,
  metrics and grades; frames), for any session.
- ``create_share_link`` / ``resolve_share``: a random token for read-only access to one
  session until it expires. Only the token's SHA-256 is stored (``shares._id``), so the
  collection itself opens nothing; a TTL index removes expired ones and ``resolve_share``
  checks the time itself (TTL pruning is lazy).
- ``delete_session``: the session and everything stored for it, through the app's
  journaled writer (ordered with its other writes; never undone by a replay).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from pipeline.card import AnswerCard, answer_card_view, session_header
from pipeline.queries import and_filters, list_report_answers
from pipeline.report import ReportOptions
from pipeline.safe_text import plain_html
from pipeline.timeline import answer_timeline
from pipeline.tokens import aware as _aware
from pipeline.tokens import token_id as _token_id
from pipeline.writer import BatchedWriter

SHARE_MAX_DAYS = 90
TOKEN_MAX_CHARS = 200


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SessionData:
    session: dict[str, Any]
    answers: list[dict[str, Any]]
    frames: dict[str, list[dict[str, Any]]]  # answer id -> its frames in time order


def session_frames(db: Database[dict[str, Any]], session_id: Any) -> list[dict[str, Any]]:
    """Every frame of a session, by answer then time (index by_answer_time), without _id."""
    cursor = db.frames.find({"session_id": str(session_id)}, {"_id": 0})
    return list(cursor.sort([("answer_id", ASCENDING), ("t", ASCENDING)]).batch_size(5000))


def load_session(db: Database[dict[str, Any]], session_id: Any, access: Mapping[str, Any] | None = None) -> SessionData | None:
    """The session, its answers and frames; None when it does not exist or ``access`` hides it."""
    sid = str(session_id)
    session = db.sessions.find_one(and_filters({"_id": sid}, access))
    if session is None:
        return None
    frames: dict[str, list[dict[str, Any]]] = {}
    for f in session_frames(db, sid):
        frames.setdefault(str(f.get("answer_id")), []).append(f)
    return SessionData(session, list_report_answers(db, sid), frames)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{margin-bottom:.2rem} .meta{color:#666;margin-bottom:1.5rem}
.answer{border:1px solid #ddd;border-radius:8px;padding:1rem 1.2rem;margin:1.2rem 0}
.metrics{display:flex;flex-wrap:wrap;gap:1.5rem;margin:.6rem 0}
.metric .label{font-size:.8rem;color:#666} .metric .value{font-size:1.3rem;font-weight:600}
.missing{background:#eef4ff;padding:.4rem .6rem;border-radius:4px;margin:.3rem 0}
.note{color:#666;font-size:.9rem} table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #eee;padding:.3rem .4rem;text-align:left;vertical-align:top}
details{margin-top:.6rem}
"""


def _metric(label: str, value: str) -> str:
    return (f'<div class="metric"><div class="label">{plain_html(label)}</div>'
            f'<div class="value">{plain_html(value)}</div></div>')


def card_html(card: AnswerCard) -> str:
    """The feedback card as HTML: the same view-model, numbers and advice as the pages."""
    parts = ['<div class="metrics">', *(_metric(t.label, t.value) for t in card.tiles), "</div>"]
    parts += [f'<div class="missing">{plain_html(line)}</div>' for line in card.missing]
    parts += [f'<div class="note">{plain_html(line)}</div>' for line in card.notes]
    if (expression := card.expression_line(plain_html)) is not None:
        parts.append(f'<div class="note">{expression}</div>')
    if card.advice:
        parts.append("<p><strong>Advice</strong></p><ul>"
                     + "".join(f"<li>{plain_html(a)}</li>" for a in card.advice) + "</ul>")
    table = card.evidence_table()
    if table:
        parts.append("<p><strong>Grade evidence</strong></p><table><tr>"
                     + "".join(f"<th>{plain_html(c)}</th>" for c in table[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{plain_html(v)}</td>" for v in row.values()) + "</tr>" for row in table]
        parts.append("</table>")
    star = card.star_table()
    if star:
        parts.append("<p><strong>STAR structure</strong></p><table><tr>"
                     + "".join(f"<th>{plain_html(c)}</th>" for c in star[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{plain_html(v)}</td>" for v in row.values()) + "</tr>" for row in star]
        parts.append("</table>")
    text = plain_html(card.transcript) if card.transcript else "<em>No transcript stored.</em>"
    parts.append(f"<details><summary>Transcript</summary><p>{text}</p></details>")
    return "\n".join(parts)


def session_html(data: SessionData, options: ReportOptions | None = None) -> str:
    """One HTML document with the header, and per answer its timeline figure, card and transcript.

    plotly.js is inlined with the first figure only (the others reuse it): the file is
    self-contained and opens offline.
    """
    opts = options or ReportOptions()
    header = session_header(data.session, data.answers)
    title = f"{header['candidate']} · {header['role']}" if header["role"] else str(header["candidate"])
    meta = " · ".join(x for x in (header["date"], header["status"], ", ".join(header["flags"])) if x)
    grade = f"Overall grade {header['grade_text']}" + (f" ({header['band']})" if header["band"] else "")
    body = [f"<h1>{plain_html(title)}</h1>", f'<div class="meta">{plain_html(meta)}</div>',
            f"<p><strong>{plain_html(grade)}</strong> · answers graded: "
            f"{header['graded_answers']} of {header['answers']}</p>"]
    if not data.answers:
        body.append("<p>No answers stored for this session.</p>")
    plotly_included = False
    for n, answer in enumerate(data.answers):
        frames = data.frames.get(str(answer.get("_id")), [])
        card = answer_card_view(answer, frames, opts)
        fig = answer_timeline(answer, frames, opts)
        # Element ids carry a position, never stored text.
        fig_html = fig.to_html(full_html=False, include_plotlyjs=not plotly_included, div_id=f"timeline-{n}",
                               config={"displaylogo": False})
        plotly_included = True
        body.append(f'<section class="answer" id="answer-{n}"><h2>{plain_html(card.title)}</h2>'
                    f"{fig_html}\n{card_html(card)}</section>")
    exported = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f'<p class="note">Exported from MockAI on {exported}. '
                f'Session id {plain_html(data.session.get("_id"))}.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{plain_html(title)} — MockAI report</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- samples

CSV_COLUMNS = (
    "kind", "session_id", "answer_id", "answer_index", "question", "t_ms", "start_s", "end_s", "word",
    "probability", "face", "dominant", "confidence", "eye_contact", "gaze_score", "eye_contact_method",
    "gaze_yaw", "gaze_pitch", "head_movement", "head_yaw", "head_pitch", "head_roll", "framing_dx", "framing_dy",
    "framing_scale", "eyes_closed", "smile", "smiling", "too_small",
    *(f"emotion_{e}" for e in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")),
    "status", "grade", "band", "flags", "wpm", "word_count", "filler_count", "fillers_per_minute", "pause_count",
    "longest_pause_s", "transcript",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)  # ObjectId, Decimal128, bytes…


def samples_json(data: SessionData) -> str:
    """The session, its answers (whole: words, metrics, grade with evidence) and its frames."""
    frames = [f for aid in sorted(data.frames) for f in data.frames[aid]]
    doc = {"session": data.session, "answers": data.answers, "frames": frames}
    return json.dumps(_jsonable(doc), ensure_ascii=False, indent=1)


def sample_rows(data: SessionData) -> Iterable[dict[str, Any]]:
    """Tidy rows: one ``answer`` row per answer (metrics and grade), then one ``word`` row per
    word and one ``frame`` row per frame. Empty cells are missing values, never 0."""
    sid = str(data.session.get("_id"))
    for a in data.answers:
        aid = str(a.get("_id"))
        base = {"session_id": sid, "answer_id": aid, "answer_index": a.get("index")}
        m = a.get("metrics") or {}
        g = a.get("grade") or {}
        pauses = m.get("pauses")
        yield {**base, "kind": "answer", "question": a.get("question"), "status": a.get("status"),
               "grade": g.get("score"), "band": g.get("band"), "flags": ";".join(map(str, g.get("flags") or [])),
               "wpm": m.get("wpm"), "word_count": m.get("word_count"), "filler_count": m.get("filler_count"),
               "fillers_per_minute": m.get("fillers_per_minute"),
               "pause_count": len(pauses) if isinstance(pauses, list) else None,
               "longest_pause_s": m.get("longest_pause_s"), "transcript": a.get("transcript")}
        for w in a.get("words") or []:
            yield {**base, "kind": "word", "t_ms": w.get("t_ms"), "start_s": w.get("start"), "end_s": w.get("end"),
                   "word": w.get("word"), "probability": w.get("probability")}
        for f in data.frames.get(aid, []):
            yield {**base, **_frame_row(f)}


def _frame_row(f: Mapping[str, Any]) -> dict[str, Any]:
    """One frame's cells; fields older documents lack (head pose, framing, eyes, mouth) stay empty."""
    gaze = f.get("gaze") or {}
    head = f.get("head") or {}
    framing = f.get("framing") or {}
    offset = framing.get("offset")
    dx, dy = offset if isinstance(offset, list | tuple) and len(offset) == 2 else (None, None)
    eyes = f.get("eyes") or {}
    mouth = f.get("mouth") or {}
    emotions = f.get("emotions") or {}
    return {"kind": "frame", "t_ms": f.get("t"), "face": f.get("face"), "dominant": f.get("dominant"),
            "confidence": f.get("confidence"), "eye_contact": gaze.get("eye_contact"),
            "gaze_score": gaze.get("score"), "eye_contact_method": gaze.get("method"), "gaze_yaw": gaze.get("yaw"),
            "gaze_pitch": gaze.get("pitch"), "head_movement": head.get("movement"), "head_yaw": head.get("yaw"),
            "head_pitch": head.get("pitch"), "head_roll": head.get("roll"), "framing_dx": dx, "framing_dy": dy,
            "framing_scale": framing.get("scale"), "eyes_closed": eyes.get("closed"), "smile": mouth.get("smile"),
            "smiling": mouth.get("smiling"), "too_small": f.get("too_small"),
            **{f"emotion_{k}": v for k, v in emotions.items() if f"emotion_{k}" in CSV_COLUMNS}}


_FORMULA_START = frozenset("=+-@")


def _formula_like(value: str) -> bool:
    """Whether a spreadsheet could read ``value`` as a formula (or a DDE command).

    Spreadsheets skip leading spaces and line breaks and some map full-width signs (＝, ＋)
    to ASCII ones, so the check is made after NFKC normalisation and after dropping leading
    whitespace, control and format characters (tab, CR, LF, NUL, zero-width space...).
    """
    if value[:1] in ("\t", "\r", "\n"):
        return True
    text = unicodedata.normalize("NFKC", value[:200])  # the start is all that matters
    i = 0
    while i < len(text) and (text[i].isspace() or unicodedata.category(text[i]) in ("Cc", "Cf", "Zs", "Zl", "Zp")):
        i += 1
    return text[i : i + 1] in _FORMULA_START


def _csv_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return "" if value is None else value
    # csv quotes a field with "\n" (the line terminator) but not one with a lone "\r", which a
    # spreadsheet reads as a row break: the rest of the cell would start a new row, unchecked.
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    # A cell that a spreadsheet would run as a formula gets a leading ' so it stays text.
    return "'" + value if _formula_like(value) else value


def samples_csv(data: SessionData) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sample_rows(data):
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return out.getvalue()


def export_filename(session: Mapping[str, Any], extension: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in str(session.get("candidate") or "session"))[:40].strip("-")
    return f"mockai-{keep or 'session'}-{str(session.get('_id'))[:12]}.{extension}"


# --------------------------------------------------------------------------- share links


def create_share_link(db: Database[dict[str, Any]], session_id: Any, ttl_days: float, now: datetime | None = None,
                      created_by: str | None = None) -> str:
    """A new read-only link token for one session, valid ``ttl_days`` (at most SHARE_MAX_DAYS)."""
    sid = str(session_id)
    if db.sessions.find_one({"_id": sid}, {"_id": 1}) is None:
        raise ValueError(f"no session with id {sid!r}")
    days = float(ttl_days)
    if not 0 < days <= SHARE_MAX_DAYS:
        raise ValueError(f"a share link lasts more than 0 and at most {SHARE_MAX_DAYS} days")
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(24)
    db.shares.insert_one({"_id": _token_id(token), "session_id": sid, "created_at": now, "created_by": created_by,
                          "expires_at": now + timedelta(days=days)})
    return token


def resolve_share(db: Database[dict[str, Any]], token: Any, now: datetime | None = None) -> str | None:
    """The session id a token opens, or None (unknown, malformed or expired token)."""
    if not isinstance(token, str) or not token or len(token) > TOKEN_MAX_CHARS:
        return None
    share = db.shares.find_one({"_id": _token_id(token)})
    expires = _aware((share or {}).get("expires_at"))
    if share is None or expires is None or expires <= (now or datetime.now(UTC)):
        return None
    return str(share["session_id"])


def list_shares(db: Database[dict[str, Any]], session_id: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """The session's live share links (their hashes, never the tokens), newest first."""
    query = {"session_id": str(session_id), "expires_at": {"$gt": now or datetime.now(UTC)}}
    return list(db.shares.find(query, {"created_at": 1, "expires_at": 1, "created_by": 1}).sort("created_at", -1))


def revoke_shares(db: Database[dict[str, Any]], session_id: Any) -> int:
    return db.shares.delete_many({"session_id": str(session_id)}).deleted_count


# --------------------------------------------------------------------------- delete


def delete_session(db: Database[dict[str, Any]], session_id: Any, writer: BatchedWriter,
                   timeout: float = 30.0) -> dict[str, int] | None:
    """Delete a session and everything stored for it: answers, frames, share links, re-scores and
    any other per-session collection (report caches, audio) holding its ``session_id``.

    With ``writer`` (the app's) the delete is journaled behind that writer's earlier writes and
    sent; a tombstone keeps any journaled write for the session, replayed later by any writer,
    from bringing it back (pipeline.writer). Returns the number of documents deleted per
    collection, or None when the database did not take it within ``timeout``: it is then kept
    in the journal and done once the database is back. There is no direct delete: it could be
    undone by a journaled write replayed after it. The session document goes last, so an
    interrupted delete leaves it listed and is repeated.
    """
    sid = str(session_id)
    writer.delete_session(sid)
    if not writer.flush(timeout):
        return None
    return writer.deleted(sid)
