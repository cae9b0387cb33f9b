"""Accounts, sign-in and who may see which session. No Streamlit here.

Users live in ``users``: ``{_id, username, role, password, coach, display_name, created_at}``.
``password`` is an scrypt hash with its own random salt and the parameters it was made with,
so the parameters can be raised later without breaking stored hashes.

Sign-in hands out a random token; only its SHA-256 is stored (``logins._id``), with
``expires_at`` (a TTL index removes old ones, and :func:`user_for_token` checks the time
itself because TTL pruning is lazy). A leaked ``logins`` collection therefore signs nobody in.

Every value that reaches a query is checked to be a plain ``str`` first (usernames also
against ``[a-z0-9._-]{3,64}``), so a form field or query parameter can never be an operator.

Wrong passwords slow down the client that sends them, never the account: failures are
counted in ``login_failures`` per (client, username) and per client (ids are SHA-256 hashes,
so neither addresses nor usernames are stored; a TTL index forgets them). Once a count
reaches its threshold that client waits ``base * 2**(n - threshold)`` seconds (capped) before
its next attempt is even checked, while the same user signing in from another client is not
slowed at all. Unknown usernames count exactly like known ones, so the back-off says nothing
about which accounts exist. What a "client" is, is the page's choice (:func:`client_key`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from pipeline.settings import PASSWORD_MAX, PASSWORD_MIN, Settings
from pipeline.storage import Db
from pipeline.tokens import aware, token_id

log = logging.getLogger(__name__)

ROLES = ("admin", "coach", "researcher", "candidate")
# Roles a candidate may be assigned to (``users.coach``): they then see that candidate's sessions.
ASSIGNEE_ROLES = ("coach", "researcher", "admin")
USERNAME_RE = re.compile(r"[a-z0-9._-]{3,64}")
MIN_PASSWORD = PASSWORD_MIN
MAX_PASSWORD = PASSWORD_MAX  # longer input is refused before hashing (no hashing-cost abuse)
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
SCRYPT_MAXMEM = 64 * 1024 * 1024  # n=2**14, r=8 needs 16 MiB; OpenSSL's default cap is 32 MiB

# One message for every failed sign-in: it never says whether the username exists.
SIGN_IN_FAILED = ("Sign-in failed: unknown username or wrong password. "
                  "After repeated failures, sign-in from this browser is paused for a while.")
LOGIN_FAILURES = "login_failures"  # failure counts per (client, username) and per client
USER_FIELDS = {"password": 0}  # never hand the hash to a page
NOTHING: dict[str, Any] = {"_id": {"$in": []}}  # an access filter that matches no session


class AuthError(ValueError):
    """A sign-in or account request was refused; the message is safe to show."""


class SignInPausedError(AuthError):
    """This client failed too often: it must wait ``wait_s`` seconds before its next attempt."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(f"Too many failed sign-ins from this browser: wait {_duration(wait_s)} and try again.")


def _duration(seconds: float) -> str:
    s = max(1, math.ceil(seconds))
    if s < 120:
        return f"{s} seconds"
    return f"{math.ceil(s / 60)} minutes"


# --------------------------------------------------------------------------- passwords


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> dict[str, Any]:
    """An scrypt hash with a fresh 16-byte salt, stored with its parameters."""
    if not isinstance(password, str):
        raise AuthError("password must be text")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN,
                            maxmem=SCRYPT_MAXMEM)
    return {"algo": "scrypt", "n": n, "r": r, "p": p, "salt": _b64(salt), "hash": _b64(digest)}


def check_password(password: object, stored: object) -> bool:
    """True when ``password`` matches ``stored`` (constant-time compare of the derived keys)."""
    if not isinstance(password, str) or not isinstance(stored, Mapping) or stored.get("algo") != "scrypt":
        return False
    if len(password) > MAX_PASSWORD:
        return False
    try:
        salt = base64.b64decode(stored["salt"])
        expected = base64.b64decode(stored["hash"])
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=int(stored["n"]), r=int(stored["r"]),
                                p=int(stored["p"]), dklen=len(expected), maxmem=SCRYPT_MAXMEM)
    except (KeyError, TypeError, ValueError):
        return False
    return hmac.compare_digest(digest, expected)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))  # unknown users cost as much time as known ones


# --------------------------------------------------------------------------- users


def normalize_username(username: object) -> str:
    """Lower-cased, stripped username; AuthError unless it is 3-64 of ``[a-z0-9._-]``."""
    if not isinstance(username, str):
        raise AuthError("Username must be text.")
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise AuthError("Username must be 3 to 64 characters: letters a-z, digits, '.', '_' or '-'.")
    return name


def create_user(db: Db, username: object, password: object, role: str, *, coach: str | None = None,
                display_name: str | None = None) -> dict[str, Any]:
    """Insert a user and return it (without the hash). AuthError explains any refusal."""
    name = normalize_username(username)
    if role not in ROLES:
        raise AuthError(f"Role must be one of {', '.join(ROLES)}.")
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"Password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.")
    coach_name = None
    if role == "candidate" and coach:
        coach_name = normalize_username(coach)
        if db.users.find_one({"username": coach_name, "role": {"$in": list(ASSIGNEE_ROLES)}}, {"_id": 1}) is None:
            raise AuthError(f"No coach or researcher called {coach_name!r}.")
    if display_name is not None and not isinstance(display_name, str):
        raise AuthError("Display name must be text.")
    doc = {
        "_id": uuid.uuid4().hex, "username": name, "role": role, "password": hash_password(password),
        "coach": coach_name, "display_name": (display_name or "").strip()[:200] or name,
        "created_at": datetime.now(UTC),
    }
    try:
        db.users.insert_one(doc)
    except DuplicateKeyError as exc:
        raise AuthError(f"The username {name!r} is taken.") from exc
    return {k: v for k, v in doc.items() if k != "password"}


def get_user(db: Db, username: object) -> dict[str, Any] | None:
    try:
        name = normalize_username(username)
    except AuthError:
        return None
    return db.users.find_one({"username": name}, USER_FIELDS)


def list_users(db: Db) -> list[dict[str, Any]]:
    """Every account for the admin page: no hashes, no lockout counters."""
    fields = {"_id": 0, "username": 1, "role": 1, "coach": 1, "display_name": 1, "created_at": 1}
    return list(db.users.find({}, fields).sort("username", 1))


def has_admin(db: Db) -> bool:
    return db.users.find_one({"role": "admin"}, {"_id": 1}) is not None


def ensure_admin(db: Db, settings: Settings) -> bool:
    """Create user ``admin`` from ``MOCKAI_ADMIN_PASSWORD`` when no admin exists. True if one exists after.

    An invalid password never gets here: :class:`Settings` refuses it, so the server does not
    start rather than fall back to the first-run form that anyone could fill in.
    """
    if has_admin(db):
        return True
    if settings.access.admin_password is None:
        return False
    try:
        create_user(db, "admin", settings.access.admin_password.get_secret_value(), "admin", display_name="Administrator")
    except AuthError as exc:  # another process made it first (or took the name): re-check below
        log.warning("MOCKAI_ADMIN_PASSWORD did not create the admin account: %s", exc)
    return has_admin(db)


# --------------------------------------------------------------------------- sign-in and back-off


def client_key(header_value: str | None = None, ip_address: str | None = None,
               browser_session: str | None = None) -> str:
    """Who is signing in, as the back-off counts it.

    The address a trusted reverse proxy put in its header (last entry: the one it appended),
    else the connection's address, else the browser session (loopback connections have no
    address worth using: every local user shares it, so one of them could slow all the others).
    """
    if isinstance(header_value, str) and header_value:  # only text counts (a test runtime hands out mocks)
        last = header_value.split(",")[-1].strip()
        if last:
            return f"addr:{last[:100]}"
    if isinstance(ip_address, str) and ip_address:
        return f"addr:{ip_address[:100]}"
    if isinstance(browser_session, str) and browser_session:
        return f"browser:{browser_session[:100]}"
    return "unknown"  # callers that name no client (scripts, tests) share one


def _failure_ids(client: str, username: str | None) -> tuple[str, str]:
    """(pair id, client id) in ``login_failures``: hashes, so no address or username is stored."""
    def h(*parts: str) -> str:
        return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()

    return h("pair", client, username or "?"), h("client", client)


def sign_in_wait(db: Db, client: str, username: object, settings: Settings, now: datetime | None = None) -> float:
    """Seconds ``client`` must still wait before trying ``username`` again (0: it may try now)."""
    now = now or datetime.now(UTC)
    try:
        name: str | None = normalize_username(username)
    except AuthError:
        name = None
    pair_id, client_id = _failure_ids(client, name)
    thresholds = {pair_id: settings.access.login_backoff_after, client_id: settings.access.login_client_backoff_after}
    wait = 0.0
    for doc in db[LOGIN_FAILURES].find({"_id": {"$in": [pair_id, client_id]}}):
        expires, last = aware(doc.get("expires_at")), aware(doc.get("last_at"))
        if expires is None or last is None or expires <= now:  # forgotten (TTL pruning is lazy)
            continue
        over = int(doc.get("failures") or 0) - thresholds[doc["_id"]]
        if over < 0:
            continue
        delay = min(settings.access.login_backoff_max_seconds, settings.access.login_backoff_base_seconds * 2.0 ** min(over, 60))
        wait = max(wait, (last + timedelta(seconds=delay) - now).total_seconds())
    return wait


def verify_password(db: Db, username: object, password: object, settings: Settings,
                    now: datetime | None = None, client: str | None = None) -> dict[str, Any]:
    """The user when ``password`` is right; otherwise AuthError(SIGN_IN_FAILED).

    A ``client`` (:func:`client_key`) with too many recent failures for this username, or for
    any usernames, gets :class:`SignInPausedError` before the password is even checked (the right
    one included) until its back-off ends; other clients are not affected. Success forgets
    that client's failures for this username (not its overall count: signing in to one's own
    account must not reset the guessing of another's).
    """
    now = now or datetime.now(UTC)
    client = client or client_key()
    wait = sign_in_wait(db, client, username, settings, now)
    if wait > 0:
        raise SignInPausedError(wait)
    try:
        name = normalize_username(username)
    except AuthError:
        name = None
    doc = db.users.find_one({"username": name}) if name else None
    ok = check_password(password, doc["password"] if doc else _DUMMY_HASH)  # same work whether or not it exists
    if doc is None or not ok:
        _record_failure(db, client, name, settings, now)
        raise AuthError(SIGN_IN_FAILED)
    db[LOGIN_FAILURES].delete_one({"_id": _failure_ids(client, name)[0]})
    return {k: v for k, v in doc.items() if k != "password"}


def _record_failure(db: Db, client: str, username: str | None, settings: Settings, now: datetime) -> None:
    # Kept at least as long as the longest wait, so a back-off never ends by being forgotten.
    keep = timedelta(seconds=max(settings.access.login_failure_forget_minutes * 60, settings.access.login_backoff_max_seconds))
    ids = _failure_ids(client, username)
    db[LOGIN_FAILURES].delete_many({"_id": {"$in": list(ids)}, "expires_at": {"$lte": now}})  # start afresh
    for kind, key in zip(("pair", "client"), ids, strict=True):
        db[LOGIN_FAILURES].update_one({"_id": key}, {"$inc": {"failures": 1}, "$set": {
            "kind": kind, "last_at": now, "expires_at": now + keep}}, upsert=True)


def set_password(db: Db, username: object, password: object) -> None:
    """Replace a password (admin reset) and end the account's sign-ins."""
    name = normalize_username(username)
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"Password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.")
    result = db.users.update_one({"username": name}, {"$set": {"password": hash_password(password)},
                                                      "$unset": {"failed_logins": "", "locked_until": ""}})
    if result.matched_count == 0:
        raise AuthError(f"No user called {name!r}.")
    db.logins.delete_many({"username": name})  # sign-ins made with the old password end now


# --------------------------------------------------------------------------- sign-in tokens


def start_login(db: Db, user: Mapping[str, Any], settings: Settings, now: datetime | None = None) -> str:
    """A new sign-in token for ``user``, valid for ``login_hours``. Only its hash is stored."""
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    db.logins.insert_one({"_id": token_id(token), "user_id": str(user["_id"]), "username": str(user["username"]),
                          "created_at": now, "expires_at": now + timedelta(hours=settings.access.login_hours)})
    return token


def user_for_token(db: Db, token: object, now: datetime | None = None) -> dict[str, Any] | None:
    """The signed-in user for ``token``; None when unknown, expired, or the user is gone."""
    if not isinstance(token, str) or not 20 <= len(token) <= 128:
        return None
    login = db.logins.find_one({"_id": token_id(token)})
    if login is None:
        return None
    expires = aware(login.get("expires_at"))
    if expires is None or expires <= (now or datetime.now(UTC)):
        db.logins.delete_one({"_id": login["_id"]})
        return None
    return db.users.find_one({"_id": str(login["user_id"])}, USER_FIELDS)


def sign_out(db: Db, token: object) -> None:
    if isinstance(token, str):
        db.logins.delete_one({"_id": token_id(token)})


# --------------------------------------------------------------------------- who sees what


def coach_candidates(db: Db, coach: str) -> list[str]:
    """Usernames of the candidates whose coach is ``coach``."""
    return [str(d["username"]) for d in db.users.find({"coach": str(coach), "role": "candidate"}, {"username": 1})]


def session_access_filter(user: Mapping[str, Any] | None, db: Db | None = None) -> dict[str, Any] | None:
    """The filter to merge (``$and``) into every ``sessions`` query for ``user``.

    None means everything (admin). A coach or researcher sees sessions marked with their username
    as coach or recorded by one of the candidates assigned to them (resolved through ``db`` now, so
    a newly assigned candidate shows at once); a candidate sees their own. No user, or an unknown
    role, sees nothing.
    """
    if not user:
        return dict(NOTHING)
    role, username = user.get("role"), str(user.get("username", ""))
    if role == "admin":
        return None
    if role in ("coach", "researcher"):
        candidates = coach_candidates(db, username) if db is not None else []
        return {"$or": [{"coach": username}, {"candidate_user": {"$in": candidates}}]}
    if role == "candidate":
        return {"candidate_user": username}
    return dict(NOTHING)


def can_view_session(user: Mapping[str, Any] | None, session: Mapping[str, Any] | None,
                     db: Db | None = None) -> bool:
    """The same rule as :func:`session_access_filter`, for one session document in hand."""
    if not user or session is None:
        return False
    role, username = user.get("role"), str(user.get("username", ""))
    if role == "admin":
        return True
    owner = session.get("candidate_user")
    if role == "candidate":
        return isinstance(owner, str) and owner == username
    if role in ("coach", "researcher"):
        if session.get("coach") == username:
            return True
        return isinstance(owner, str) and db is not None and owner in coach_candidates(db, username)
    return False


def merge_access(query: Mapping[str, Any], access: Mapping[str, Any] | None) -> dict[str, Any]:
    """``query`` narrowed to what ``access`` allows (None: unchanged)."""
    if access is None:
        return dict(query)
    if not query:
        return dict(access)
    return {"$and": [dict(query), dict(access)]}
