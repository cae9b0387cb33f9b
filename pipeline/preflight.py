"""``python -m pipeline.preflight``: check the settings before the server starts (``make run``).

Exit status 2 with a plain message when a setting is refused (e.g. ``MOCKAI_ADMIN_PASSWORD``
set but too short), so the server is never started with it. With no admin password set it
says how to set one: until an admin account exists, the first-run form is open to anyone who
can reach the page.
"""

from __future__ import annotations

import sys

from pipeline.settings import PASSWORD_MIN, get_settings, settings_problem

ADMIN_HINT = (
    "MOCKAI_ADMIN_PASSWORD is not set. Until an admin account exists, anyone who can open the app "
    "can create it from the first-run form. To create user 'admin' at start instead, run:\n"
    f"    MOCKAI_ADMIN_PASSWORD='<{PASSWORD_MIN} or more characters>' make run\n"
    "(once the admin account exists, the variable is no longer needed)."
)


def main() -> int:
    problem = settings_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if get_settings().access.admin_password is None:
        print(ADMIN_HINT, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
