"""One worker process as the supervisor sees it (``WorkerState``), its row in ``Sidecar.status()``,
and starting a spawn-context process safely from inside Streamlit."""

from __future__ import annotations

import contextlib
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def start_process(process: Any) -> None:
    """Start a spawn-context process safely from inside Streamlit (or AppTest)."""
    with _plain_main():
        process.start()


@contextlib.contextmanager
def _plain_main() -> Any:
    """Spawn re-imports the parent's ``__main__`` in the child. Under ``streamlit run`` that is the
    app script itself (which would start another sidecar), so hide it while the child starts."""
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


@dataclass
class WorkerState:
    name: str
    target: Callable[..., None]
    process: Any = None
    heartbeat: Any = None
    inbox: Any = None
    state: str = "stopped"  # stopped, warming, ready, restarting, failed
    started_at: float = 0.0
    restarts: int = 0
    ready_timings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None


def worker_row(w: WorkerState) -> dict[str, Any]:
    """The status page's row of one worker: state, restarts, warm-up, metrics, journal, pid."""
    return {"state": w.state, "restarts": w.restarts, "last_error": w.last_error,
            "alive": bool(w.process and w.process.is_alive()),
            "heartbeat_age_s": round(time.time() - w.heartbeat.value, 2) if w.heartbeat else None,
            "warm_up": w.ready_timings, "metrics": w.metrics,
            # Writes the journal refused (disk or journal full), held in the worker's memory.
            "journal_backlog": int(w.metrics.get("journal_backlog", 0)),
            "journal_dropped": int(w.metrics.get("journal_dropped", 0)),
            "journal_error": w.metrics.get("journal_error"),
            "journal_full": bool(w.metrics.get("journal_full", False)),
            "pid": w.process.pid if w.process is not None else None}
