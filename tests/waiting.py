"""Waiting on a condition instead of sleeping: a loaded machine only makes these slower, never wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(cond: Callable[[], T], what: str, timeout: float = 60.0, every: float = 0.02) -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail naming ``what``.

    ``timeout`` only bounds a hang: it is generous on purpose and is not a speed claim.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
