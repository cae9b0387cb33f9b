"""Issue 9, access items 1-4 and fault item 11, reproduced against the real app (AppTest of
app.py) and the real database: re-scoring is limited to the user's sessions, resume needs a
signed token the browser holds (never a typed name), an invalid admin password stops the
server, wrong passwords slow down the guessing client (not the account), and the Interview
setup works with the database down."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
import streamlit as st
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

import ui.session
from pipeline import auth
from pipeline import interview as iv
from pipeline.questions import load_builtin_sets
from pipeline.settings import Settings, get_settings
from pipeline.storage import EmbeddedServer, ensure_indexes, free_port
from tests.pages_support import APP, open_page, page_database
from tests.test_rescore import store_session

pytestmark = pytest.mark.security
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def page_db(mongo_uri, tmp_path, monkeypatch):
    yield from page_database(mongo_uri, tmp_path, monkeypatch, "test_security")


class SidecarStandIn:
    """The Interview page only checks the engine is on before recording; the sidebar asks its status.
    (The setup step under test never hands it media; the sidecar has its own tests.)"""

    def status(self) -> dict[str, Any]:
        return {"ready": True, "workers": {}}


@pytest.fixture
def sidecar_on(monkeypatch):
    monkeypatch.setattr(ui.session, "get_sidecar", lambda: SidecarStandIn())


def _plain(elements: Any) -> list[str]:
    """Element texts without markdown escaping (user-facing text may be escaped before display)."""
    return [str(e.value).replace("\\", "").replace("\u2060", "") for e in elements]


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _login(db, username: str, role: str, **kw: Any) -> str:
    user = auth.create_user(db, username, f"{username}-pass-1", role, **kw)
    return auth.start_login(db, user, get_settings())


# --------------------------------------------------------------------------- 1. re-scoring other coaches' sessions


def test_coach_applies_a_profile_to_their_own_sessions_only(page_db):
    token_a = _login(page_db, "coach_a", "coach")
    _login(page_db, "coach_b", "coach")
    store_session(page_db, "sa", [0.3, 0.6, 0.9])
    store_session(page_db, "sb", [0.3, 0.6, 0.9], minutes=1)
    page_db.sessions.update_one({"_id": "sa"}, {"$set": {"coach": "coach_a"}})
    page_db.sessions.update_one({"_id": "sb"}, {"$set": {"coach": "coach_b"}})
    b_before = page_db.sessions.find_one({"_id": "sb"})
    a_before = page_db.sessions.find_one({"_id": "sa"})

    at = open_page("pages/research.py", token_a)
    assert any("**1** stored session:" in i.value for i in at.info), "the page says how many sessions A may touch"

    # Preview: only A's three answers are re-scored.
    _ok(at.button(key="preview").click().run())
    assert {m.label: m.value for m in at.metric}["Answers re-scored"] == "3"

    # Calibration: only A's answers are aggregated.
    _ok(at.button(key="cal_compute").click().run())
    table = at.dataframe[-1].value
    assert int(table.loc[table["metric"] == "Grade (0-1)", "n"].iloc[0]) == 1  # one session, A's

    # A saves a stricter profile and applies it.
    at.number_input(key="thr_keypoint_match_threshold").set_value(0.9)
    at.text_input(key="profile_name").input("strict")
    _ok(at.button(key="save").click().run())
    _ok(at.run())  # the profile list is read at the top of the page
    at.selectbox(key="apply_pick").select("strict v1")
    at.checkbox(key="apply_confirm").check()
    _ok(at.run())
    assert at.checkbox(key="apply_confirm").label.endswith("the 1 session you may change")
    _ok(at.button(key="apply").click().run())
    assert any("Applied strict v1" in s.value and "in 1 sessions" in s.value for s in at.success)

    # Read back from the database: B's session untouched, A's re-graded.
    b_after = page_db.sessions.find_one({"_id": "sb"})
    assert (b_after["grade"], b_after["band"]) == (b_before["grade"], b_before["band"])
    assert "profile" not in b_after and "rescored_at" not in b_after
    assert page_db.answer_scores.count_documents({"session_id": "sb"}) == 0
    a_after = page_db.sessions.find_one({"_id": "sa"})
    assert a_after["profile"] == {"name": "strict", "version": 1}
    assert a_after["grade"] < a_before["grade"]
    assert page_db.answer_scores.count_documents({"session_id": "sa", "profile.name": "strict"}) == 3


def test_admin_still_rescores_everything(page_db):
    token = _login(page_db, "admin", "admin")
    store_session(page_db, "s1", [0.3, 0.6])
    store_session(page_db, "s2", [0.4], minutes=1)
    page_db.sessions.update_one({"_id": "s2"}, {"$set": {"coach": "someone"}})
    at = open_page("pages/research.py", token)
    assert any("**2** stored sessions: every stored session (admin)" in i.value for i in at.info)
    _ok(at.button(key="preview").click().run())
    assert {m.label: m.value for m in at.metric}["Answers re-scored"] == "3"


# --------------------------------------------------------------------------- 2. resume by typed name


def _to_setup(at: AppTest) -> AppTest:
    at.checkbox(key="consent_box").check().run()
    return _ok(at.button(key="consent_continue").click().run())


def _start_session(at: AppTest, name: str) -> str:
    at.text_input(key="candidate_name").input(name).run()
    at.number_input(key="q_count").set_value(2)
    at.radio(key="mode").set_value("Upload a recording").run()
    _ok(at.button(key="setup_next").click().run())
    return at.session_state["interview"]["session_id"]


def _offered(at: AppTest) -> bool:
    return any("You have an unfinished session" in i.value for i in at.info) or any(b.key == "resume" for b in at.button)


def test_resume_needs_the_browsers_signed_token_not_the_name(page_db, sidecar_on, tmp_path):
    browser_a = _to_setup(open_page("pages/interview.py"))
    sid = _start_session(browser_a, "Victim Person")
    token = browser_a.query_params.get(iv.RESUME_PARAM)
    assert token and sid in token, "starting a session puts its resume token in the tab's URL"
    ui.session.get_store().writer.flush()
    assert page_db.sessions.find_one({"_id": sid})["status"] == "recording"

    # The key that signs tokens is generated once, owner-only, under data_dir.
    key = tmp_path / "secrets" / "resume.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700

    # Browser B types the victim's name: nothing is offered.
    browser_b = _to_setup(open_page("pages/interview.py"))
    browser_b.text_input(key="candidate_name").input("Victim Person").run()
    _ok(browser_b)
    assert not _offered(browser_b)

    # B with a forged token (another session id under A's signature, a made-up signature, garbage).
    other = "0" * 32
    forged = [token.replace(sid, other), token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
              f"r1.{sid}.9999999999.x", "not-a-token", "r1." + sid]
    for bad in forged:
        at = _to_setup(open_page("pages/interview.py", resume=bad))
        at.text_input(key="candidate_name").input("Victim Person").run()
        assert _plain(at.error) == [iv.RESUME_INVALID], bad
        assert not _offered(at), bad
    # B with a correctly signed but expired token.
    expired = iv.resume_token(sid, get_settings(), now=datetime.now(UTC) - timedelta(hours=13))
    at = _to_setup(open_page("pages/interview.py", resume=expired))
    assert _plain(at.error) == [iv.RESUME_EXPIRED] and not _offered(at)

    # A's tab reloaded (a new browser session, same URL): offered, whatever name is typed.
    reloaded = _to_setup(open_page("pages/interview.py", resume=token))
    assert _offered(reloaded) and not reloaded.error
    _ok(reloaded.button(key="resume").click().run())
    assert reloaded.session_state["interview"]["session_id"] == sid
    assert reloaded.session_state["interview"]["step"] == "upload"
    assert reloaded.query_params.get(iv.RESUME_PARAM), "the resumed tab keeps a token for its next reload"


def test_signed_in_candidate_resumes_only_their_own_sessions(page_db, sidecar_on):
    settings = get_settings()
    ensure_indexes(page_db)
    auth.create_user(page_db, "cand_a", "cand-a-pass", "candidate")
    auth.create_user(page_db, "cand_b", "cand-b-pass", "candidate")
    now = datetime.now(UTC)
    question = load_builtin_sets()[0].questions[0].to_dict()
    base = {"status": "recording", "source": "upload", "questions": [question], "started_at": now}
    page_db.sessions.insert_many([{**base, "_id": "a" * 32, "candidate": "Same Name", "candidate_user": "cand_a"},
                                  {**base, "_id": "b" * 32, "candidate": "Same Name", "candidate_user": "cand_b"}])
    assert iv.unfinished_session(page_db, candidate_user="cand_a")["_id"] == "a" * 32
    assert iv.unfinished_session(page_db) is None  # no token, not signed in: nothing, whatever the name
    # A token for an account's session does not resume it for anyone else.
    sid = iv.resume_token_session(iv.resume_token("a" * 32, settings), settings)
    assert iv.unfinished_session(page_db, session_id=sid, candidate_user="cand_a")["_id"] == "a" * 32
    assert iv.unfinished_session(page_db, session_id=sid, candidate_user="cand_b") is None
    assert iv.unfinished_session(page_db, session_id=sid) is None

    token = auth.start_login(page_db, auth.get_user(page_db, "cand_b"), settings)
    at = _to_setup(open_page("pages/interview.py", token))
    assert _offered(at)
    _ok(at.button(key="resume").click().run())
    assert at.session_state["interview"]["session_id"] == "b" * 32


# --------------------------------------------------------------------------- 3. admin password set but invalid


def test_invalid_admin_password_stops_the_app(page_db, monkeypatch):
    monkeypatch.setenv("MOCKAI_ADMIN_PASSWORD", "7-chars")
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    _ok(at)
    assert _plain(at.error) == [
        "The server refuses to start: MOCKAI_ADMIN_PASSWORD: it is set but must be 8 to 1024 characters long; "
        "fix it or unset it, then start the server again."]
    assert "7-chars" not in str([e.value for e in at.error])
    assert not at.text_input and not at.button and not any("First run" in i.value for i in at.info)
    assert not at.title, "no page ran"
    assert page_db.users.count_documents({}) == 0, "nobody became admin"

    # The command line refuses too, before anything starts (make run calls it before streamlit).
    env = {**os.environ, "MOCKAI_ADMIN_PASSWORD": "7-chars"}
    done = subprocess.run([sys.executable, "-m", "pipeline.preflight"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "MOCKAI_ADMIN_PASSWORD" in done.stderr and "7-chars" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "sidecar", "analyze", "--question", "q", "--audio", "none.wav"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "MOCKAI_ADMIN_PASSWORD" in done.stderr and "7-chars" not in done.stderr
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, admin_password="x" * 7)
    assert "x" * 7 not in str(exc.value)
    assert Settings(_env_file=None, admin_password="x" * 8).access.admin_password is not None


def test_unset_admin_password_is_said_plainly(page_db):
    at = open_page("pages/sessions.py")
    assert any("First run" in i.value for i in at.info)
    assert any("Anyone who can open this page can fill in this form and become the administrator" in w.value
               and "MOCKAI_ADMIN_PASSWORD" in w.value for w in at.warning)
    env = {k: v for k, v in os.environ.items() if k != "MOCKAI_ADMIN_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "pipeline.preflight"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "MOCKAI_ADMIN_PASSWORD='<8 or more characters>' make run" in done.stderr
    # make run checks the settings (and prints that hint) before it starts the server.
    plan = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert plan.index("-m pipeline.preflight") < plan.index("-m streamlit run")


# --------------------------------------------------------------------------- 4. anyone can lock anyone out


def _sign_in(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="sign_in_username").input(username)
    at.text_input(key="sign_in_password").input(password)
    return _ok(at.button(key="sign_in_submit").click().run())


def test_guessing_client_is_slowed_down_and_the_admin_still_signs_in(page_db, monkeypatch):
    # A long first wait, so "still waiting" never depends on how fast this machine runs the pages.
    monkeypatch.setenv("MOCKAI_LOGIN_BACKOFF_BASE_SECONDS", "600")
    get_settings.cache_clear()
    auth.create_user(page_db, "admin", "admin-pass-1", "admin")
    client_x = open_page("pages/sessions.py")
    errors = []
    for i in range(10):
        _sign_in(client_x, "admin", f"wrong-guess-{i}")
        errors.append(_plain(client_x.error))
    assert errors[:3] == [[auth.SIGN_IN_FAILED]] * 3
    assert all(len(e) == 1 and e[0].startswith("Too many failed sign-ins from this browser: wait") for e in errors[3:])
    _sign_in(client_x, "admin", "admin-pass-1")  # the right password, during X's back-off
    assert "auth_token" not in client_x.session_state
    assert _plain(client_x.error)[0].startswith("Too many failed sign-ins from this browser")

    client_y = open_page("pages/sessions.py")  # the real admin, from another browser, at once
    _sign_in(client_y, "admin", "admin-pass-1")
    assert not client_y.error and "auth_token" in client_y.session_state
    assert any("No sessions yet" in i.value for i in client_y.info)

    # Counts live in MongoDB (shared by every app process), forgotten by a TTL index, stored by hash only.
    docs = list(page_db[auth.LOGIN_FAILURES].find())
    assert {d["kind"] for d in docs} == {"pair", "client"} and max(d["failures"] for d in docs) == 3
    assert "admin" not in str(docs) and "browser:" not in str(docs)
    info = page_db[auth.LOGIN_FAILURES].index_information()
    assert any(v.get("expireAfterSeconds") == 0 and v["key"] == [("expires_at", 1)] for v in info.values())
    assert page_db.users.find_one({"username": "admin"}).keys() <= {
        "_id", "username", "role", "password", "coach", "display_name", "created_at"}, "no lock on the account"


SETTINGS = Settings(_env_file=None)


def test_backoff_doubles_per_failure_and_never_says_whether_the_user_exists(db):
    ensure_indexes(db)
    auth.create_user(db, "admin", "admin-pass-1", "admin")
    t0 = datetime.now(UTC).replace(microsecond=0)  # BSON dates keep milliseconds only
    for name in ("admin", "nobody"):  # the same for a real and an unknown username
        client = f"browser:{name}"
        for _ in range(3):
            with pytest.raises(auth.AuthError) as exc:
                auth.verify_password(db, name, "wrong-pass", SETTINGS, now=t0, client=client)
            assert type(exc.value) is auth.AuthError and str(exc.value) == auth.SIGN_IN_FAILED
        waits = []
        t = t0
        for _ in range(4):  # each further failure, once its wait is over, doubles the next wait
            waits.append(auth.sign_in_wait(db, client, name, SETTINGS, now=t))
            t += timedelta(seconds=waits[-1])
            with pytest.raises(auth.AuthError):
                auth.verify_password(db, name, "wrong-pass", SETTINGS, now=t, client=client)
        assert waits == [1.0, 2.0, 4.0, 8.0], name
        with pytest.raises(auth.SignInPausedError) as paused:  # even the right password waits
            auth.verify_password(db, name, "admin-pass-1", SETTINGS, now=t + timedelta(seconds=15), client=client)
        assert paused.value.wait_s == pytest.approx(1.0)
    # Another client is not slowed at all, and the cap holds.
    assert auth.verify_password(db, "admin", "admin-pass-1", SETTINGS, now=t0, client="browser:other")
    assert auth.sign_in_wait(db, "browser:admin", "admin", SETTINGS.with_values(
        {"login_backoff_max_seconds": 3.0}), now=t) == pytest.approx(3.0)
    # After its wait the right password works, and that pair's count is forgotten.
    later = t + timedelta(seconds=16)
    assert auth.verify_password(db, "admin", "admin-pass-1", SETTINGS, now=later, client="browser:admin")
    assert auth.sign_in_wait(db, "browser:admin", "admin", SETTINGS, now=later) == 0


def test_one_client_guessing_many_usernames_is_slowed_too(db):
    ensure_indexes(db)
    auth.create_user(db, "admin", "admin-pass-1", "admin")
    t0 = datetime.now(UTC).replace(microsecond=0)  # BSON dates keep milliseconds only
    for i in range(SETTINGS.access.login_client_backoff_after):
        with pytest.raises(auth.AuthError):
            auth.verify_password(db, f"user{i}", "wrong-pass", SETTINGS, now=t0, client="addr:203.0.113.9")
    with pytest.raises(auth.SignInPausedError):
        auth.verify_password(db, "admin", "admin-pass-1", SETTINGS, now=t0, client="addr:203.0.113.9")
    assert auth.verify_password(db, "admin", "admin-pass-1", SETTINGS, now=t0, client="addr:198.51.100.7")
    # Failures are forgotten after login_failure_forget_minutes (the TTL index's job; checked on read too).
    later = t0 + timedelta(minutes=SETTINGS.access.login_failure_forget_minutes + 1)
    assert auth.verify_password(db, "admin", "admin-pass-1", SETTINGS, now=later, client="addr:203.0.113.9")


def test_client_key_prefers_the_proxy_header_then_the_address_then_the_browser_session():
    assert auth.client_key("203.0.113.9, 10.0.0.2", "10.0.0.1", "s1") == "addr:10.0.0.2"  # the proxy's own entry
    assert auth.client_key(None, "198.51.100.7", "s1") == "addr:198.51.100.7"
    assert auth.client_key("", None, "s1") == "browser:s1"  # loopback: no address worth sharing
    assert auth.client_key() == "unknown"


# --------------------------------------------------------------------------- 11. interview setup with the database down


def _journal_holds(data_dir: Path, text: str) -> bool:
    return any(text in p.read_text(errors="replace") for p in (data_dir / "journal").rglob("*") if p.is_file())


def _setup_while_down(data_dir: Path, **query: str) -> None:
    at = _to_setup(open_page("pages/interview.py", timeout=90, **query))
    assert any(i.value.startswith("Resume unavailable right now") for i in at.info)
    assert not _offered(at)
    at.text_input(key="candidate_name").input("Offline Person").run()
    at.radio(key="mode").set_value("Upload a recording").run()
    _ok(at)
    assert not at.button(key="setup_next").disabled, "the Next button is there and usable"
    _ok(at.button(key="setup_next").click().run())
    sid = at.session_state["interview"]["session_id"]
    assert at.session_state["interview"]["step"] == "upload" and at.query_params.get(iv.RESUME_PARAM)
    assert _journal_holds(data_dir, sid), "the session insert waits in the journal"
    assert ui.session.get_store().writer.status().pending_ops >= 1


@pytest.fixture
def fresh_app(tmp_path, monkeypatch, sidecar_on):
    monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MOCKAI_SIDECAR_ENABLED", "false")
    monkeypatch.delenv("MOCKAI_ADMIN_PASSWORD", raising=False)
    get_settings.cache_clear()
    st.cache_resource.clear()
    yield tmp_path
    ui.session.get_store().writer.close(flush_timeout=0)
    st.cache_resource.clear()
    get_settings.cache_clear()


def test_interview_setup_with_the_database_unreachable(fresh_app, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200")
    get_settings.cache_clear()
    _setup_while_down(fresh_app)


def test_interview_setup_after_the_database_died(fresh_app, monkeypatch, tmp_path_factory):
    """The probe's case: the app was connected, then the server went away; a tab with a resume
    token reloads and its lookup cannot run."""
    server = EmbeddedServer(tmp_path_factory.mktemp("dying") / "db").start()
    try:
        monkeypatch.setenv("MONGODB_URI", server.uri)
        monkeypatch.setenv("MOCKAI_DB_NAME", "test_dying")
        get_settings.cache_clear()
        browser = _to_setup(open_page("pages/interview.py"))
        sid = _start_session(browser, "Before The Crash")
        assert ui.session.get_store().writer.flush()
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
            assert client.test_dying.sessions.find_one({"_id": sid})
    finally:
        server.stop()
    _setup_while_down(fresh_app, resume=browser.query_params[iv.RESUME_PARAM])


def test_interview_setup_with_a_full_journal_says_so_and_records_nothing(page_db, sidecar_on, monkeypatch):
    """Items 12-13 on the page side: a refused (not acknowledged) session insert is said plainly;
    the page neither crashes nor moves on as if the session existed."""
    monkeypatch.setenv("MOCKAI_JOURNAL_MAX_BYTES", "1024")  # smaller than one session document
    get_settings.cache_clear()
    at = _to_setup(open_page("pages/interview.py"))
    at.text_input(key="candidate_name").input("Full Disk Person").run()
    at.radio(key="mode").set_value("Upload a recording").run()
    _ok(at.button(key="setup_next").click().run())
    assert any("cannot save a new session right now" in e.value for e in at.error)
    assert at.session_state["interview"]["step"] == "setup" and "session_id" not in at.session_state["interview"]
    assert not at.query_params.get(iv.RESUME_PARAM)
    assert ui.session.get_store().writer.status().pending_ops == 0
    assert page_db.sessions.count_documents({"candidate": "Full Disk Person"}) == 0
