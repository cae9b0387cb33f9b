"""Helpers for stored secrets and their expiry, shared by sign-ins (pipeline.auth) and share links
(pipeline.export): a token is stored only as its SHA-256, and times read back are made UTC-aware.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime


def token_id(token: str) -> str:
    """The stored id of a token: its SHA-256 (hex), so the collection itself opens nothing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def aware(value: object) -> datetime | None:
    """``value`` as a UTC-aware datetime (a naive one is taken as UTC); None when it is not a datetime."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
