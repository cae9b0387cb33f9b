"""Export (HTML, CSV, JSON), share links and delete; and the report page's share/export/delete section."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from pipeline import auth
from pipeline.card import answer_card_view
from pipeline.export import (
    create_share_link,
    delete_session,
    list_shares,
    load_session,
    resolve_share,
    revoke_shares,
    samples_csv,
    samples_json,
    session_html,
)
from pipeline.report import ReportOptions
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.storage import ensure_indexes
from pipeline.writer import BatchedWriter, WriterOptions
from tests.pages_support import open_page, page_database
from tests.test_report import make_answer, make_frames

SESSION = {"_id": "s-1", "candidate": "Grace <b>Hopper</b>", "role": "backend", "status": "complete",
           "started_at": datetime(2026, 11, 25, 12, 43, tzinfo=UTC), "grade": 0.64, "band": "good",
           "settings": {"emotion_enabled": True},
           "questions": [{"type": "technical"}, {"type": "behavioural"}]}


def _seed(db, session_id: str = "s-1") -> None:
    db.sessions.insert_one({**SESSION, "_id": session_id})
    second = make_answer(f"{session_id}-a2", session_id, index=1, question="What would you <script>change</script>?")
    db.answers.insert_many([make_answer(f"{session_id}-a1", session_id), second])
    db.frames.insert_many(make_frames(answer_id=f"{session_id}-a1", session_id=session_id)
                          + make_frames(30, answer_id=f"{session_id}-a2", session_id=session_id))


@pytest.fixture
def seeded(db):
    ensure_indexes(db)
    _seed(db)
    _seed(db, "s-other")  # must survive every operation on s-1
    return db


def test_html_is_one_self_contained_document_with_every_answer(seeded):
    data = load_session(seeded, "s-1")
    assert data is not None and len(data.answers) == 2 and len(data.frames["s-1-a1"]) == 60
    doc = session_html(data)
    assert doc.startswith("<!DOCTYPE html>") and doc.count("<html") == 1 and doc.rstrip().endswith("</html>")
    # plotly.js inlined exactly once, no external script or stylesheet: it opens offline.
    assert len(re.findall(r"\* plotly\.js v\d", doc)) == 1
    assert doc.index("* plotly.js v") < doc.index("Plotly.newPlot(")  # the library comes before the first figure
    assert not re.search(r"<script[^>]+src=", doc) and not re.search(r"<link[^>]+href=", doc)
    assert len(doc) > 3_000_000  # the library itself is inside
    assert doc.count("Plotly.newPlot(") == 2  # one figure per answer
    assert doc.count('class="answer"') == 2
    assert "Tell me about a system you built." in doc and "What would you &lt;script&gt;change&lt;/script&gt;?" in doc
    assert "Grace &lt;b&gt;Hopper&lt;/b&gt;" in doc and "<b>Hopper</b>" not in doc  # stored text is escaped
    assert "You covered 2 of 3 key points" in doc and "built a cache" in doc
    assert "Overall grade 64%" in doc


def test_html_cards_are_the_view_model_with_emotion_shown_or_not(seeded):
    """The export lays out the same AnswerCard as the pages: its tiles, and the expression only
    when emotion is enabled."""
    data = load_session(seeded, "s-1")
    answer = data.answers[0]
    card = answer_card_view(answer, data.frames[str(answer["_id"])], ReportOptions())
    dominant = card.metrics["dominant_emotion"]
    assert dominant and [t.label for t in card.tiles][-1] == "Expression"
    shown = session_html(data, ReportOptions())
    for tile in card.tiles:
        assert f'<div class="label">{tile.label}</div><div class="value">{tile.value}</div>' in shown
    assert f"Most frequent expression: {dominant}" in shown
    off = re.sub(r"(?s)<script.*?</script>", "", session_html(data, ReportOptions(emotion_enabled=False)))  # text only
    assert "Expression" not in off and "Most frequent expression" not in off
    assert "Emotion feedback is switched off." in off and 'class="label">Grade' in off


def test_html_of_a_session_without_answers_needs_no_plotly(db):
    db.sessions.insert_one({**SESSION, "_id": "empty"})
    doc = session_html(load_session(db, "empty"))
    assert "No answers stored for this session." in doc and "Plotly.newPlot" not in doc


def test_csv_and_json_contain_the_samples(seeded):
    data = load_session(seeded, "s-1")
    rows = list(csv.DictReader(io.StringIO(samples_csv(data))))
    kinds = [r["kind"] for r in rows]
    n_words = len(data.answers[0]["words"])
    assert kinds.count("answer") == 2 and kinds.count("word") == 2 * n_words and kinds.count("frame") == 90
    first = next(r for r in rows if r["kind"] == "answer")
    assert first["grade"] == "0.64" and first["band"] == "good" and first["wpm"] == "185.0" and first["pause_count"] == "1"
    word = next(r for r in rows if r["kind"] == "word")
    assert word["word"] == "um" and float(word["start_s"]) == pytest.approx(0.2) and word["t_ms"]
    no_face = [r for r in rows if r["kind"] == "frame" and r["face"] == "False"]
    assert no_face and all(r["emotion_happy"] == "" and r["eye_contact"] == "" for r in no_face)  # missing, not 0
    face = next(r for r in rows if r["kind"] == "frame" and r["face"] == "True")
    assert float(face["emotion_happy"]) == pytest.approx(0.8) and face["gaze_score"]
    assert {r["session_id"] for r in rows} == {"s-1"}
    parsed = json.loads(samples_json(data))
    assert parsed["session"]["_id"] == "s-1" and parsed["session"]["started_at"].startswith("2026-11-25T12:43")
    assert [a["_id"] for a in parsed["answers"]] == ["s-1-a1", "s-1-a2"]
    assert parsed["answers"][0]["words"][0]["word"] == "um" and parsed["answers"][0]["grade"]["score"] == 0.64
    assert len(parsed["frames"]) == 90 and {f["session_id"] for f in parsed["frames"]} == {"s-1"}


def test_csv_has_the_landmark_frame_columns_and_leaves_them_empty_on_old_frames():
    from pipeline.export import SessionData
    from tests.test_face_report import DOWN, sample, speech_answer

    new = [sample(1_000, **DOWN, offset=(0.05, -0.25), scale=0.2, closed=False, smiling=True),
           sample(1_200, eye=None, too_small=True, gaze=None, head=None), sample(1_400, face=False)]
    data = SessionData({"_id": "s-f"}, [speech_answer(), make_answer("a-old", "s-f")],
                       {"a-f": new, "a-old": make_frames(3, answer_id="a-old", session_id="s-f", no_face=range(0))})
    rows = [r for r in csv.DictReader(io.StringIO(samples_csv(data))) if r["kind"] == "frame"]
    assert len(rows) == 6
    down, small, gone, old = rows[0], rows[1], rows[2], rows[3]
    assert (down["eye_contact"], down["eye_contact_method"], down["gaze_yaw"], down["gaze_pitch"]) == (
        "False", "iris", "3.0", "28.0")
    assert (down["head_yaw"], down["head_pitch"], down["head_roll"]) == ("2.0", "22.0", "0.5")
    assert (down["framing_dx"], down["framing_dy"], down["framing_scale"]) == ("0.05", "-0.25", "0.2")
    assert (down["eyes_closed"], down["smile"], down["smiling"], down["too_small"]) == ("False", "0.7", "True", "False")
    assert small["too_small"] == "True" and small["eye_contact"] == "" and small["head_yaw"] == ""
    assert gone["face"] == "False" and gone["head_yaw"] == gone["framing_scale"] == gone["smile"] == ""
    for col in ("eye_contact_method", "gaze_yaw", "head_yaw", "head_pitch", "head_roll", "framing_dx",
                "framing_scale", "eyes_closed", "smile", "too_small"):
        assert old[col] == "", col  # stored before these fields existed: missing, never 0
    assert old["eye_contact"] == "True" and old["gaze_score"] == "0.7"


def test_csv_cells_cannot_be_spreadsheet_formulas(db):
    db.sessions.insert_one({**SESSION, "_id": "s-f"})
    db.answers.insert_one(make_answer("a-f", "s-f", question="=HYPERLINK(\"http://x\")", transcript="+cmd"))
    rows = list(csv.DictReader(io.StringIO(samples_csv(load_session(db, "s-f")))))
    assert rows[0]["question"].startswith("'=") and rows[0]["transcript"] == "'+cmd"


def test_access_hides_sessions_from_export(seeded):
    assert load_session(seeded, "s-1", {"candidate_user": "someone-else"}) is None
    assert load_session(seeded, {"$ne": None}) is None  # an operator is just an unknown id


def test_share_links_open_one_session_until_they_expire(seeded):
    now = datetime.now(UTC)
    token = create_share_link(seeded, "s-1", 7, now=now)
    assert len(token) >= 32 and seeded.shares.find_one({"_id": token}) is None  # only the hash is stored
    assert resolve_share(seeded, token) == "s-1"
    assert resolve_share(seeded, token, now=now + timedelta(days=7, seconds=1)) is None  # expired
    assert resolve_share(seeded, token + "x") is None and resolve_share(seeded, "") is None
    assert resolve_share(seeded, {"$ne": None}) is None and resolve_share(seeded, "x" * 10_000) is None
    assert len(list_shares(seeded, "s-1")) == 1
    info = seeded.shares.index_information()
    assert info["expires"]["expireAfterSeconds"] == 0  # the server removes expired links too
    with pytest.raises(ValueError):
        create_share_link(seeded, "s-1", 0)
    with pytest.raises(ValueError):
        create_share_link(seeded, "nope", 7)
    assert revoke_shares(seeded, "s-1") == 1 and resolve_share(seeded, token) is None


def test_delete_removes_everything_of_the_session_and_nothing_else(seeded, tmp_path):
    create_share_link(seeded, "s-1", 7)
    keep = create_share_link(seeded, "s-other", 7)
    seeded.report_cache.insert_one({"session_id": "s-1", "html": "…"})  # a cache keyed by session: goes too
    before = {c: seeded[c].count_documents({"session_id": "s-other"}) for c in ("answers", "frames", "shares")}
    writer = BatchedWriter(lambda: seeded, WriterOptions(journal_dir=tmp_path / "journal", flush_seconds=3600))
    try:
        gone = delete_session(seeded, "s-1", writer)
        again = delete_session(seeded, "s-1", writer)
    finally:
        writer.close()
    assert gone == {"shares": 1, "frames": 90, "answers": 2, "report_cache": 1, "sessions": 1}
    for name in seeded.list_collection_names():
        assert seeded[name].count_documents({"session_id": "s-1"}) == 0, name
    assert seeded.sessions.count_documents({"_id": "s-1"}) == 0
    assert {c: seeded[c].count_documents({"session_id": "s-other"}) for c in before} == before
    assert seeded.sessions.find_one({"_id": "s-other"}) and resolve_share(seeded, keep) == "s-other"
    assert again is not None and again["sessions"] == 0  # repeatable


# --------------------------------------------------------------------------- the report page


@pytest.fixture
def report_db(mongo_uri, tmp_path, monkeypatch):
    for db in page_database(mongo_uri, tmp_path, monkeypatch, "test_export_page"):
        _seed(db)
        yield db


def _page(token: str | None = None, **query: str) -> AppTest:
    return open_page("pages/report.py", token, **query)


def test_share_link_opens_the_report_read_only_without_sign_in(report_db):
    token = create_share_link(report_db, "s-1", 1)
    at = _page(share=token)
    assert any(md("Grace <b>Hopper</b>") in s.value for s in at.subheader)  # shown as text
    assert len(at.get("plotly_chart")) == 2
    assert not at.selectbox and not [b for b in at.button if b.key in ("report_delete", "share_create")]
    assert not at.get("download_button")  # read-only: no export, share or delete
    for bad in ("nope", '{"$ne": null}'):
        at = _page(share=bad)
        assert any("unknown or has expired" in e.value for e in at.error) and not at.get("plotly_chart")
    report_db.shares.update_many({}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    at = _page(share=token)
    assert any("unknown or has expired" in e.value for e in at.error)


def test_report_page_exports_shares_and_deletes(report_db):
    user = auth.create_user(report_db, "admin", "a-long-password-1", "admin")
    at = _page(auth.start_login(report_db, user, Settings()), session="s-1")
    assert len(at.get("download_button")) == 3
    at.button(key="share_create").click().run()
    link = next(c.value for c in at.code)
    token = link.split("share=", 1)[1]
    assert link.startswith("report?share=") and resolve_share(report_db, token) == "s-1"
    assert at.button(key="report_delete").disabled
    at.checkbox(key="report_delete_sure").check().run()
    at.button(key="report_delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Deleted" in s.value for s in at.success)
    for name in ("sessions", "answers", "frames", "shares"):
        key = "_id" if name == "sessions" else "session_id"
        assert report_db[name].count_documents({key: "s-1"}) == 0, name
    assert resolve_share(report_db, token) is None
