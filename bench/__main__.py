"""Runs every benchmark in turn (``make bench``); each prints a markdown table for BENCHMARKS.md.

The 10-minute browser soak is long: ``python -m bench --soak`` adds it. So are the memory
benchmarks (hours of generated media, the models; a job worker on a 15-min recording):
``python -m bench --memory`` adds them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ["bench_emotion.py", "bench_asr.py", "bench_grading.py", "bench_sidecar.py", "bench_capture.py", "bench_report.py",
         "bench_rescore.py", "bench_sessions.py", "bench_whatif.py"]


def main() -> int:
    names = QUICK + (["bench_soak.py"] if "--soak" in sys.argv else []) + (
        ["bench_memory.py", "bench_job_memory.py"] if "--memory" in sys.argv else [])
    failed = 0
    for name in names:
        path = HERE / name
        if not path.exists():
            continue
        print(f"\n## {name}\n", flush=True)
        failed += subprocess.run([sys.executable, str(path)], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
