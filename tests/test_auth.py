"""Accounts and access: hashing, sign-in tokens, back-off, who sees which session, hostile input, the pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

from pipeline import auth
from pipeline.safe_text import md
from pipeline.settings import Settings, get_settings
from pipeline.storage import ensure_indexes
from pipeline.tokens import token_id
from tests.pages_support import APP, open_page, page_database

SETTINGS = Settings(_env_file=None, login_hours=12, login_backoff_after=3, login_backoff_base_seconds=1)
HOSTILE = ['{"$gt": ""}', {"$gt": ""}, {"$ne": None}, ["admin"], None, 7, "a" * 10_000, "ädmin", "ad\x00min",
           "admin; db.dropDatabase()", "$where", "adm in", "..", "ad"]


@pytest.fixture
def users(db) -> dict[str, dict[str, Any]]:
    ensure_indexes(db)
    made = {
        "admin": auth.create_user(db, "admin", "admin-pass-1", "admin"),
        "coach1": auth.create_user(db, "coach1", "coach-pass-1", "coach"),
        "coach2": auth.create_user(db, "coach2", "coach-pass-2", "coach"),
    }
    made["cand1"] = auth.create_user(db, "cand1", "cand-pass-1", "candidate", coach="coach1", display_name="Ada L")
    made["cand2"] = auth.create_user(db, "cand2", "cand-pass-2", "candidate", coach="coach2")
    made["cand3"] = auth.create_user(db, "cand3", "cand-pass-3", "candidate")  # no coach yet
    return made


# --------------------------------------------------------------------------- passwords


def test_hash_is_salted_scrypt_with_its_parameters():
    a, b = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert a["algo"] == "scrypt" and (a["n"], a["r"], a["p"]) == (2**14, 8, 1)
    assert a["salt"] != b["salt"] and a["hash"] != b["hash"]  # per-user salt
    assert auth.check_password("correct horse", a) and auth.check_password("correct horse", b)
    assert not auth.check_password("correct horsE", a)
    assert not auth.check_password("", a)
    assert not auth.check_password({"$gt": ""}, a)
    assert not auth.check_password("correct horse", {"algo": "md5", "hash": "x"})
    assert not auth.check_password("correct horse", {**a, "salt": "%%%"})
    # The parameters travel with the hash: a weaker old one still verifies.
    old = auth.hash_password("pw", n=2**10)
    assert old["n"] == 2**10 and auth.check_password("pw", old)


def test_create_user_normalises_and_never_stores_the_password(db):
    ensure_indexes(db)
    user = auth.create_user(db, "  Ada.Lovelace ", "pässwörd-漢字", "candidate", display_name="Ada")
    assert user["username"] == "ada.lovelace" and "password" not in user
    stored = db.users.find_one({"username": "ada.lovelace"})
    assert "pässwörd" not in str(stored) and stored["password"]["algo"] == "scrypt"
    assert stored["role"] == "candidate" and stored["display_name"] == "Ada" and stored["created_at"]
    with pytest.raises(auth.AuthError, match="taken"):
        auth.create_user(db, "ADA.LOVELACE", "another-pass", "coach")
    with pytest.raises(auth.AuthError, match="Password"):
        auth.create_user(db, "bob", "short", "coach")
    with pytest.raises(auth.AuthError, match="Role"):
        auth.create_user(db, "bob", "long-enough", "root")
    with pytest.raises(auth.AuthError, match="coach"):
        auth.create_user(db, "bob", "long-enough", "candidate", coach="nobody")
    assert auth.verify_password(db, "Ada.Lovelace", "pässwörd-漢字", SETTINGS)["username"] == "ada.lovelace"


def test_wrong_password_and_unknown_user_get_the_same_message(db, users):
    assert auth.verify_password(db, "coach1", "coach-pass-1", SETTINGS)["role"] == "coach"
    with pytest.raises(auth.AuthError) as wrong:
        auth.verify_password(db, "coach1", "coach-pass-x", SETTINGS)
    with pytest.raises(auth.AuthError) as unknown:
        auth.verify_password(db, "nobody", "coach-pass-1", SETTINGS)
    assert str(wrong.value) == str(unknown.value) == auth.SIGN_IN_FAILED
    assert "password" not in auth.verify_password(db, "coach1", "coach-pass-1", SETTINGS)


def test_failures_slow_down_that_client_and_never_lock_the_account(db, users):
    now = datetime.now(UTC).replace(microsecond=0)
    for _ in range(2):
        with pytest.raises(auth.AuthError):
            auth.verify_password(db, "cand1", "wrong-pass", SETTINGS, now=now, client="browser:x")
    assert auth.verify_password(db, "cand1", "cand-pass-1", SETTINGS, now=now, client="browser:x")  # resets
    for _ in range(3):
        with pytest.raises(auth.AuthError):
            auth.verify_password(db, "cand1", "wrong-pass", SETTINGS, now=now, client="browser:x")
    with pytest.raises(auth.SignInPausedError) as paused:  # now even the right password waits...
        auth.verify_password(db, "cand1", "cand-pass-1", SETTINGS, now=now + timedelta(milliseconds=500),
                             client="browser:x")
    assert "wait 1 seconds" in str(paused.value) and "cand1" not in str(paused.value)
    # ...from that client only: the user from another browser signs in, the account itself is not locked.
    assert auth.verify_password(db, "cand1", "cand-pass-1", SETTINGS, now=now, client="browser:y")
    assert auth.verify_password(db, "cand1", "cand-pass-1", SETTINGS, now=now + timedelta(seconds=1),
                                client="browser:x")
    assert "locked_until" not in db.users.find_one({"username": "cand1"})
    # An admin reset still ends the old sign-ins.
    token = auth.start_login(db, users["cand2"], SETTINGS)
    auth.set_password(db, "cand2", "new-pass-22")
    assert auth.user_for_token(db, token) is None
    assert auth.verify_password(db, "cand2", "new-pass-22", SETTINGS)


# --------------------------------------------------------------------------- tokens


def test_tokens_sign_in_expire_and_sign_out(db, users):
    token = auth.start_login(db, users["coach1"], SETTINGS)
    assert len(token) >= 40
    assert db.logins.find_one({"_id": token}) is None  # only the hash is stored
    login = db.logins.find_one({"username": "coach1"})
    assert login["expires_at"] - login["created_at"] == timedelta(hours=12)
    user = auth.user_for_token(db, token)
    assert user["username"] == "coach1" and "password" not in user
    assert auth.user_for_token(db, token, now=datetime.now(UTC) + timedelta(hours=13)) is None  # expired
    assert db.logins.find_one({"_id": login["_id"]}) is None  # and removed

    # A token stored already expired (the TTL monitor has not run yet) is refused.
    expired = "x" * 43
    db.logins.insert_one({"_id": token_id(expired), "user_id": users["admin"]["_id"], "username": "admin",
                          "created_at": datetime.now(UTC) - timedelta(hours=13),
                          "expires_at": datetime.now(UTC) - timedelta(hours=1)})
    assert auth.user_for_token(db, expired) is None

    token = auth.start_login(db, users["cand1"], SETTINGS)
    auth.sign_out(db, token)
    assert auth.user_for_token(db, token) is None
    for bad in (None, "", "short", {"$ne": None}, ["x" * 43], "y" * 10_000):
        assert auth.user_for_token(db, bad) is None


def test_login_ttl_index_exists(db):
    ensure_indexes(db)
    info = db.logins.index_information()
    assert any(v.get("expireAfterSeconds") == 0 and v["key"] == [("expires_at", 1)] for v in info.values())


def test_admin_bootstrap_from_setting(db):
    ensure_indexes(db)
    assert not auth.ensure_admin(db, SETTINGS)  # no password set: the pages show the first-run form
    with pytest.raises(ValidationError):  # set but too short: the server refuses to start (tests/test_security_access)
        Settings(_env_file=None, admin_password="short")
    settings = Settings(_env_file=None, admin_password="bootstrap-pass")
    assert "bootstrap-pass" not in repr(settings)
    assert auth.ensure_admin(db, settings) and auth.ensure_admin(db, settings)
    assert db.users.count_documents({"role": "admin"}) == 1
    assert auth.verify_password(db, "admin", "bootstrap-pass", settings)["role"] == "admin"


# --------------------------------------------------------------------------- access


def _sessions(db) -> None:
    now = datetime.now(UTC)
    db.sessions.insert_many([
        {"_id": "s-c1", "candidate": "Ada", "candidate_user": "cand1", "coach": "coach1", "started_at": now},
        {"_id": "s-c1-old", "candidate": "Ada", "candidate_user": "cand1", "coach": None, "started_at": now},
        {"_id": "s-c2", "candidate": "Bob", "candidate_user": "cand2", "coach": "coach2", "started_at": now},
        {"_id": "s-c3", "candidate": "Cy", "candidate_user": "cand3", "coach": None, "started_at": now},
        {"_id": "s-anon", "candidate": "Anonymous", "started_at": now},
        {"_id": "s-assigned", "candidate": "Walk-in", "coach": "coach1", "started_at": now},
    ])


def _visible(db, user) -> set[str]:
    access = auth.session_access_filter(user, db)
    return {d["_id"] for d in db.sessions.find(access if access is not None else {})}


def test_access_filters_against_the_database(db, users):
    _sessions(db)
    assert auth.session_access_filter(users["admin"], db) is None
    assert _visible(db, users["admin"]) == {"s-c1", "s-c1-old", "s-c2", "s-c3", "s-anon", "s-assigned"}
    assert _visible(db, users["coach1"]) == {"s-c1", "s-c1-old", "s-assigned"}
    assert _visible(db, users["coach2"]) == {"s-c2"}
    assert _visible(db, users["cand1"]) == {"s-c1", "s-c1-old"}
    assert _visible(db, users["cand3"]) == {"s-c3"}
    assert _visible(db, None) == set()
    assert _visible(db, {"username": "x", "role": "root"}) == set()
    # Assigning a candidate to a coach shows their sessions at once.
    db.users.update_one({"username": "cand3"}, {"$set": {"coach": "coach2"}})
    assert _visible(db, users["coach2"]) == {"s-c2", "s-c3"}
    # The one-document check agrees with the filter for every user and session.
    for user in users.values():
        seen = _visible(db, user)
        for session in db.sessions.find():
            assert auth.can_view_session(user, session, db) == (session["_id"] in seen), (user["username"], session)
    assert not auth.can_view_session(None, db.sessions.find_one({"_id": "s-c1"}), db)
    assert not auth.can_view_session(users["cand1"], None, db)


def test_access_filter_narrows_any_query(db, users):
    _sessions(db)
    coach = auth.session_access_filter(users["coach1"], db)
    wide = {"$or": [{"candidate": "Bob"}, {"candidate": "Ada"}]}
    got = {d["_id"] for d in db.sessions.find(auth.merge_access(wide, coach))}
    assert got == {"s-c1", "s-c1-old"}  # Bob is not theirs
    assert auth.merge_access(wide, None) == wide and auth.merge_access({}, coach) == coach


@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_hostile_usernames_and_passwords_never_become_operators(db, users, hostile):
    with pytest.raises(auth.AuthError):
        auth.create_user(db, hostile, "long-enough-pass", "admin")
    with pytest.raises(auth.AuthError) as exc:
        auth.verify_password(db, hostile, "admin-pass-1", SETTINGS)
    assert str(exc.value) == auth.SIGN_IN_FAILED
    with pytest.raises(auth.AuthError) as exc:  # as a password, against a real account
        auth.verify_password(db, "admin", hostile, SETTINGS)
    assert str(exc.value) == auth.SIGN_IN_FAILED
    if hostile:
        with pytest.raises(auth.AuthError):
            auth.create_user(db, "newuser", "long-enough-pass", "candidate", coach=hostile)
    assert auth.get_user(db, hostile) is None
    assert auth.user_for_token(db, hostile) is None
    assert db.users.count_documents({}) == len(users)


def test_operator_shaped_text_is_only_ever_hashed_or_matched_as_a_value(db):
    ensure_indexes(db)
    auth.create_user(db, "eve", '{"$gt": ""}', "coach")  # a legitimate (if odd) password
    assert auth.verify_password(db, "eve", '{"$gt": ""}', SETTINGS)["username"] == "eve"
    with pytest.raises(auth.AuthError):
        auth.verify_password(db, "eve", {"$gt": ""}, SETTINGS)
    with pytest.raises(auth.AuthError):
        auth.verify_password(db, "eve", "x" * 100_000, SETTINGS)
    # A user document with an operator for a name yields a filter that matches nothing.
    db.sessions.insert_one({"_id": "s", "candidate_user": "eve", "coach": "eve", "started_at": datetime.now(UTC)})
    for role in ("candidate", "coach"):
        access = auth.session_access_filter({"username": {"$ne": None}, "role": role}, db)
        assert list(db.sessions.find(access)) == []


# --------------------------------------------------------------------------- the pages


@pytest.fixture
def app_db(mongo_uri, tmp_path, monkeypatch):
    yield from page_database(mongo_uri, tmp_path, monkeypatch, "test_auth")


def _app(page: str, token: str | None = None, **query: str) -> AppTest:
    return open_page(page, token, **query)


def _sign_in(at: AppTest, username: Any, password: str) -> AppTest:
    at.text_input(key="sign_in_username").input(username)
    at.text_input(key="sign_in_password").input(password)
    at.button(key="sign_in_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sign_in_form_blocks_the_sessions_page_until_signed_in(app_db):
    auth.create_user(app_db, "coach1", "coach-pass-1", "coach")
    auth.create_user(app_db, "admin", "admin-pass-1", "admin")
    auth.create_user(app_db, "cand1", "cand-pass-1", "candidate", coach="coach1")
    _sessions(app_db)
    at = _app("pages/sessions.py")
    assert not at.dataframe and any("Sign in" in i.value for i in at.info)
    for name, pw in (("coach1", "wrong-password"), ("nobody", "coach-pass-1"), ('{"$gt": ""}', "x")):
        _sign_in(at, name, pw)
        assert [e.value for e in at.error] == [md(auth.SIGN_IN_FAILED)]  # generic: never says which was wrong
        assert not at.dataframe
    _sign_in(at, "coach1", "coach-pass-1")
    assert not at.error
    table = at.dataframe[0].value.to_string()
    assert "Ada" in table and "Walk-in" in table and "Bob" not in table and "Anonymous" not in table
    token = at.session_state["auth_token"]
    # The sidebar says who is signed in and offers sign-out. (AppTest drops the entry script's
    # sidebar on every run after the first, so a click on it cannot be driven from here.)
    home = AppTest.from_file(APP, default_timeout=60)
    home.session_state["auth_token"] = token
    home.run()
    assert any("Signed in as **coach1** (coach)" in c.value for c in home.sidebar.caption)
    assert home.sidebar.button(key="sign_out").label == "Sign out"
    auth.sign_out(app_db, token)  # what the button does, besides forgetting the token
    assert app_db.logins.count_documents({}) == 0
    at = _app("pages/sessions.py", token)
    assert not at.dataframe and at.text_input(key="sign_in_username")
    assert "auth_token" not in at.session_state


def test_expired_token_shows_the_sign_in_form_again(app_db):
    user = auth.create_user(app_db, "admin", "admin-pass-1", "admin")
    token = auth.start_login(app_db, user, SETTINGS)
    at = _app("pages/sessions.py", token)
    assert any("No sessions yet" in i.value for i in at.info)
    app_db.logins.update_many({}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    at.run()
    assert not any("No sessions yet" in i.value for i in at.info) and at.text_input(key="sign_in_username")
    assert "auth_token" not in at.session_state


def test_candidate_sees_own_sessions_and_is_refused_others_reports(app_db):
    auth.create_user(app_db, "coach1", "coach-pass-1", "coach")
    user = auth.create_user(app_db, "cand1", "cand-pass-1", "candidate", coach="coach1")
    _sessions(app_db)
    token = auth.start_login(app_db, user, SETTINGS)
    at = _app("pages/sessions.py", token)
    table = at.dataframe[0].value.to_string()
    assert "Ada" in table and "Bob" not in table and "Walk-in" not in table
    at = _app("pages/report.py", token, session="s-c2")
    assert any("not allowed" in e.value for e in at.error)
    assert not at.subheader and not at.get("plotly_chart") and not at.metric
    at = _app("pages/report.py", token, session="s-c1")
    assert any("Ada" in s.value for s in at.subheader)
    at = _app("pages/research.py", token)  # research is for coaches and admins
    assert any("admin or coach" in e.value for e in at.error) and not at.tabs and not at.dataframe


def test_first_run_form_creates_the_admin_who_creates_accounts(app_db):
    at = _app("pages/sessions.py")
    assert any("First run" in i.value for i in at.info)
    at.text_input(key="first_admin_password").input("first-admin-pass")
    at.text_input(key="first_admin_again").input("first-admin-pass")
    at.button(key="first_admin_submit").click().run()
    assert not at.exception
    assert app_db.users.find_one({"username": "admin"})["role"] == "admin"
    assert "auth_token" in at.session_state  # signed in straight away
    token = at.session_state["auth_token"]

    at = _app("pages/accounts.py", token)
    at.radio(key="acct_role").set_value("coach")
    at.text_input(key="acct_username").input("Coach.One")
    at.text_input(key="acct_password").input("coach-pass-1")
    at.button(key="acct_create").click().run()
    assert not at.exception and any(f"Created coach {md('coach.one')}" in s.value for s in at.success)
    assert "password" not in at.dataframe[0].value.to_string().lower().replace("reset", "")
    coach = auth.verify_password(app_db, "coach.one", "coach-pass-1", SETTINGS)
    at = _app("pages/accounts.py", auth.start_login(app_db, coach, SETTINGS))
    assert any("admin accounts" in e.value for e in at.error) and not at.dataframe


def test_admin_password_setting_creates_admin_at_start(app_db, monkeypatch):
    monkeypatch.setenv("MOCKAI_ADMIN_PASSWORD", "from-the-env-1")
    get_settings.cache_clear()
    at = _app("pages/sessions.py")
    assert not any("First run" in i.value for i in at.info)
    _sign_in(at, "admin", "from-the-env-1")
    assert not at.error and any("No sessions yet" in i.value for i in at.info)


def test_interview_page_needs_no_sign_in(app_db):
    at = _app("pages/interview.py")
    assert at.title[0].value == "Interview"
    assert not [t for t in at.text_input if t.key == "sign_in_username"]
    assert not any("Sign in" in i.value for i in at.info)


def test_signed_in_candidate_owns_the_interview_session(app_db, monkeypatch):
    import ui.session

    class SidecarOn:  # the page only checks it is on; the sidebar asks for its status
        def status(self) -> dict:
            return {"ready": True}

    monkeypatch.setattr(ui.session, "get_sidecar", lambda: SidecarOn())
    auth.create_user(app_db, "coach1", "coach-pass-1", "coach")
    user = auth.create_user(app_db, "cand1", "cand-pass-1", "candidate", coach="coach1", display_name="Ada L")
    at = _app("pages/interview.py", auth.start_login(app_db, user, SETTINGS))
    at.checkbox(key="consent_box").check().run()
    at.button(key="consent_continue").click().run()
    assert at.text_input(key="candidate_name").value == "Ada L"  # filled from the account
    at.radio(key="mode").set_value("Upload a recording").run()
    at.button(key="setup_next").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ui.session.get_store().writer.flush()
    session = app_db.sessions.find_one({})
    assert (session["candidate"], session["candidate_user"], session["coach"]) == ("Ada L", "cand1", "coach1")
    assert auth.can_view_session(auth.get_user(app_db, "coach1"), session, app_db)
