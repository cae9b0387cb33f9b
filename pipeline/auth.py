"""Accounts, sign-in and who may see which session. No Streamlit here.

Users live in ``users``: ``{_id, username, role, password, coach, display_name, created_at}``.
``password`` is an scrypt hash with its own random salt and the parameters it was made with,
so the parameters can be raised later without breaking stored hashes.

Sign-in hands out a random token; only its SHA-256 is stored (``logins._id``), with
``expires_at`` (a TTL index removes old ones, and :func:`user_for_token` checks the time
itself because TTL pruning is lazy). A leaked ``logins`` collection therefore signs nobody in.

Every value that reaches a query is checked to be a plain ``str`` first (usernames also
against ``[a-z0-9._-]{3,64}``), so a form field or query parameter can never be an operator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from pipeline.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("admin", "coach", "candidate")
USERNAME_RE = re.compile(r"[a-z0-9._-]{3,64}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # longer input is refused before hashing (no hashing-cost abuse)
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
SCRYPT_MAXMEM = 64 * 1024 * 1024  # n=2**14, r=8 needs 16 MiB; OpenSSL's default cap is 32 MiB

# One message for every failed sign-in: it never says whether the username exists.
SIGN_IN_FAILED = ("Sign-in failed: unknown username or wrong password. "
                  "After repeated failures the account is locked for a while.")
USER_FIELDS = {"password": 0}  # never hand the hash to a page
NOTHING: dict[str, Any] = {"_id": {"$in": []}}  # an access filter that matches no session


class AuthError(ValueError):
    """A sign-in or account request was refused; the message is safe to show."""


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


def check_password(password: Any, stored: Any) -> bool:
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


def normalize_username(username: Any) -> str:
    """Lower-cased, stripped username; AuthError unless it is 3-64 of ``[a-z0-9._-]``."""
    if not isinstance(username, str):
        raise AuthError("Username must be text.")
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise AuthError("Username must be 3 to 64 characters: letters a-z, digits, '.', '_' or '-'.")
    return name


def create_user(db: Database, username: Any, password: Any, role: str, *, coach: str | None = None,
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
        if db.users.find_one({"username": coach_name, "role": {"$in": ["coach", "admin"]}}, {"_id": 1}) is None:
            raise AuthError(f"No coach called {coach_name!r}.")
    if display_name is not None and not isinstance(display_name, str):
        raise AuthError("Display name must be text.")
    doc = {
        "_id": uuid.uuid4().hex, "username": name, "role": role, "password": hash_password(password),
        "coach": coach_name, "display_name": (display_name or "").strip()[:200] or name,
        "created_at": datetime.now(UTC), "failed_logins": 0, "locked_until": None,
    }
    try:
        db.users.insert_one(doc)
    except DuplicateKeyError as exc:
        raise AuthError(f"The username {name!r} is taken.") from exc
    return {k: v for k, v in doc.items() if k != "password"}


def get_user(db: Database, username: Any) -> dict[str, Any] | None:
    try:
        name = normalize_username(username)
    except AuthError:
        return None
    return db.users.find_one({"username": name}, USER_FIELDS)


def list_users(db: Database) -> list[dict[str, Any]]:
    """Every account for the admin page: no hashes, no lockout counters."""
    fields = {"_id": 0, "username": 1, "role": 1, "coach": 1, "display_name": 1, "created_at": 1}
    return list(db.users.find({}, fields).sort("username", 1))


def has_admin(db: Database) -> bool:
    return db.users.find_one({"role": "admin"}, {"_id": 1}) is not None


def ensure_admin(db: Database, settings: Settings) -> bool:
    """Create user ``admin`` from ``MOCKAI_ADMIN_PASSWORD`` when no admin exists. True if one exists after."""
    if has_admin(db):
        return True
    if settings.admin_password is None:
        return False
    try:
        create_user(db, "admin", settings.admin_password.get_secret_value(), "admin", display_name="Administrator")
    except AuthError as exc:  # too short, or another process made it first: re-check below
        log.warning("MOCKAI_ADMIN_PASSWORD did not create the admin account: %s", exc)
    return has_admin(db)


def verify_password(db: Database, username: Any, password: Any, settings: Settings,
                    now: datetime | None = None) -> dict[str, Any]:
    """The user when ``password`` is right; otherwise AuthError(SIGN_IN_FAILED).

    After ``login_max_failures`` wrong passwords in a row the account is locked for
    ``login_lockout_minutes`` (even the right password is refused then); success resets the count.
    """
    now = now or datetime.now(UTC)
    try:
        name = normalize_username(username)
    except AuthError:
        name = None
    doc = db.users.find_one({"username": name}) if name else None
    locked = doc is not None and _aware(doc.get("locked_until")) is not None and _aware(doc["locked_until"]) > now
    ok = check_password(password, doc["password"] if doc else _DUMMY_HASH)  # same work whether or not it exists
    if doc is None or locked or not ok:
        if doc is not None and not locked:
            _record_failure(db, doc["_id"], settings, now)
        raise AuthError(SIGN_IN_FAILED)
    if doc.get("failed_logins") or doc.get("locked_until"):
        db.users.update_one({"_id": doc["_id"]}, {"$set": {"failed_logins": 0, "locked_until": None}})
    return {k: v for k, v in doc.items() if k != "password"}


def _record_failure(db: Database, user_id: str, settings: Settings, now: datetime) -> None:
    after = db.users.find_one_and_update({"_id": user_id}, {"$inc": {"failed_logins": 1}},
                                         projection={"failed_logins": 1}, return_document=ReturnDocument.AFTER)
    if after is not None and int(after.get("failed_logins") or 0) >= settings.login_max_failures:
        until = now + timedelta(minutes=settings.login_lockout_minutes)
        db.users.update_one({"_id": user_id}, {"$set": {"locked_until": until, "failed_logins": 0}})


def set_password(db: Database, username: Any, password: Any) -> None:
    """Replace a password (admin reset), unlock the account and end its sign-ins."""
    name = normalize_username(username)
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"Password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters.")
    result = db.users.update_one({"username": name}, {"$set": {"password": hash_password(password),
                                                                "failed_logins": 0, "locked_until": None}})
    if result.matched_count == 0:
        raise AuthError(f"No user called {name!r}.")
    db.logins.delete_many({"username": name})  # sign-ins made with the old password end now


# --------------------------------------------------------------------------- sign-in tokens


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_login(db: Database, user: Mapping[str, Any], settings: Settings, now: datetime | None = None) -> str:
    """A new sign-in token for ``user``, valid for ``login_hours``. Only its hash is stored."""
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    db.logins.insert_one({"_id": _token_id(token), "user_id": str(user["_id"]), "username": str(user["username"]),
                          "created_at": now, "expires_at": now + timedelta(hours=settings.login_hours)})
    return token


def user_for_token(db: Database, token: Any, now: datetime | None = None) -> dict[str, Any] | None:
    """The signed-in user for ``token``; None when unknown, expired, or the user is gone."""
    if not isinstance(token, str) or not 20 <= len(token) <= 128:
        return None
    login = db.logins.find_one({"_id": _token_id(token)})
    if login is None:
        return None
    expires = _aware(login.get("expires_at"))
    if expires is None or expires <= (now or datetime.now(UTC)):
        db.logins.delete_one({"_id": login["_id"]})
        return None
    return db.users.find_one({"_id": str(login["user_id"])}, USER_FIELDS)


def sign_out(db: Database, token: Any) -> None:
    if isinstance(token, str):
        db.logins.delete_one({"_id": _token_id(token)})


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- who sees what


def coach_candidates(db: Database, coach: str) -> list[str]:
    """Usernames of the candidates whose coach is ``coach``."""
    return [str(d["username"]) for d in db.users.find({"coach": str(coach), "role": "candidate"}, {"username": 1})]


def session_access_filter(user: Mapping[str, Any] | None, db: Database | None = None) -> dict[str, Any] | None:
    """The filter to merge (``$and``) into every ``sessions`` query for ``user``.

    None means everything (admin). A coach sees sessions marked with their username as
    coach or recorded by one of their candidates (resolved through ``db`` now, so a newly
    assigned candidate shows at once); a candidate sees their own. No user, or an unknown
    role, sees nothing.
    """
    if not user:
        return dict(NOTHING)
    role, username = user.get("role"), str(user.get("username", ""))
    if role == "admin":
        return None
    if role == "coach":
        candidates = coach_candidates(db, username) if db is not None else []
        return {"$or": [{"coach": username}, {"candidate_user": {"$in": candidates}}]}
    if role == "candidate":
        return {"candidate_user": username}
    return dict(NOTHING)


def can_view_session(user: Mapping[str, Any] | None, session: Mapping[str, Any] | None,
                     db: Database | None = None) -> bool:
    """The same rule as :func:`session_access_filter`, for one session document in hand."""
    if not user or session is None:
        return False
    role, username = user.get("role"), str(user.get("username", ""))
    if role == "admin":
        return True
    owner = session.get("candidate_user")
    if role == "candidate":
        return isinstance(owner, str) and owner == username
    if role == "coach":
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
