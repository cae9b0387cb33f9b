"""Shared by the AppTest page tests."""

from __future__ import annotations

import pymongo

from pipeline import auth
from pipeline.settings import get_settings


def admin_token() -> str:
    """A sign-in token for an admin of the test database (the coach pages need a signed-in user)."""
    settings = get_settings()
    with pymongo.MongoClient(settings.mongodb_uri, tz_aware=True) as client:
        db = client[settings.db_name]
        user = auth.get_user(db, "admin") or auth.create_user(db, "admin", "test-admin-pass", "admin")
        return auth.start_login(db, user, settings)
