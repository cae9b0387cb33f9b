"""Peak memory against media length (issue 9, item 8) and the upload copy (item 9), old code beside new.

    python bench/bench_memory.py [--old DIR] [--no-analyze] [--old-2h] [--upload-mb 300]

Inputs are made with ffmpeg in a temporary folder (deleted afterwards): digital silence
(``anullsrc``) and a 180 Hz tone in pink noise, 48 kHz stereo, as WAV and as Ogg/Opus, of
1 min, 15 min (the default cap), 30 min and 2 h; for the whole analyze path also real speech
(jfk.flac looped) and a 30-min live WebM whose header has no length.

``--old DIR`` is a checkout of the code before the change (``git worktree add DIR <commit>``):
the same measurements run on its functions with this venv, side by side in one run.

1. Stages (one fresh process per measurement, peak RSS from the kernel's high-water mark):
   decoding to 16 kHz mono plus the pitch/energy track, each as its code does it (old: whole
   file decoded, chunks concatenated as the speech worker did, YIN over the whole signal;
   new: header check, streamed decode with the cap, ``ProsodyAccumulator`` fed 0.5 s chunks
   as the worker feeds it).
2. The whole analyze path (``python -m sidecar analyze --audio F``: app process, emotion and
   speech workers with their real models), peak RSS of the process tree sampled from /proc.
3. The upload copy: a random upload held by Streamlit's own ``UploadedFile`` written to disk
   with ``getbuffer()`` (old) or streamed in 1 MiB reads (new), and what stays in memory
   after the analysis with the upload left in Streamlit's file manager (old) or removed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "data" / "speech" / "jfk.flac"
MB = 1 << 20
CAP = 900.0

DURATIONS = {"1 min": 60, "15 min (cap)": 900, "30 min": 1800, "2 h": 7200}

# One measurement in a fresh interpreter: prints JSON with the peak RSS (VmHWM) and the outcome.
STAGE_CHILD = r"""
import json, sys, time
root, path, mode, cap = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
sys.path.insert(0, root)
import numpy as np
from pipeline import media, speech_metrics as sm
from pipeline.records import SAMPLE_RATE

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

base = hwm_mb()
t = time.perf_counter()
out = {"base_mb": base}
try:
    if mode == "new":
        media.check_duration(path, cap)
        audio = media.load_audio(path, max_seconds=cap)
        acc = sm.ProsodyAccumulator(SAMPLE_RATE, sm.SpeechMetricsOptions())
        for i in range(0, len(audio), 8000):
            acc.feed(audio[i:i + 8000])
        m = sm.compute_speech_metrics([], duration=len(audio) / SAMPLE_RATE, prosody=acc.finish())
    else:
        audio = media.load_audio(path)
        chunks = [audio[i:i + 8000].copy() for i in range(0, len(audio), 8000)]  # what the worker received
        m = sm.compute_speech_metrics([], np.concatenate(chunks))
    out.update(result="analysed", audio_mb=audio.nbytes / 2**20, frames=len(m.prosody.t))
except media.MediaError as exc:
    out.update(result="refused", message=str(exc)[:120])
out.update(peak_mb=hwm_mb(), elapsed_s=time.perf_counter() - t)
print(json.dumps(out))
"""

UPLOAD_CHILD = r"""
import io, json, os, shutil, sys, tempfile, time
root, mode, size_mb, data_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, root)
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec
from streamlit.proto.Common_pb2 import FileURLs

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

def reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

from pipeline.settings import Settings
from pipeline.uploads import saved_upload  # imported first: both copies start from the same process

mgr = MemoryUploadedFileManager("/upload")
rec = UploadedFileRec("f1", "answer.mp4", "video/mp4", os.urandom(size_mb << 20))  # what tornado stored
mgr.add_file("s1", rec)
del rec
upload = UploadedFile(mgr.get_files("s1", ["f1"])[0], FileURLs())  # the widget's value
before = rss("VmRSS")
reset_hwm()
t = time.perf_counter()
if mode == "old":
    with tempfile.NamedTemporaryFile(suffix=".mp4", dir=data_dir) as tmp:
        tmp.write(upload.getbuffer())
        tmp.flush()
        peak = rss("VmHWM")
else:
    settings = Settings(data_dir=data_dir, max_upload_mb=size_mb + 1)
    with saved_upload(upload, upload.name, upload.size, settings) as path:
        peak = rss("VmHWM")
    mgr.remove_file("s1", upload.file_id)
    upload.close()
elapsed = time.perf_counter() - t
after = rss("VmRSS")
print(json.dumps({"before_mb": before, "peak_mb": peak, "after_mb": after, "elapsed_s": elapsed}))
"""


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def make_inputs(folder: Path, with_2h: bool) -> dict[str, Path]:
    sources = {
        "silence": ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"],
        "tone+noise": ["-f", "lavfi", "-i", "sine=frequency=180:sample_rate=48000", "-f", "lavfi", "-i",
                       "anoisesrc=r=48000:c=pink:a=0.05", "-filter_complex",
                       "[0:a]volume=0.3[t];[t][1:a]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo"],
    }
    made: dict[str, Path] = {}
    for label, seconds in DURATIONS.items():
        if seconds == 7200 and not with_2h:
            continue
        for content, src in sources.items():
            for fmt, codec in (("wav", ["-c:a", "pcm_s16le"]), ("ogg", ["-c:a", "libopus", "-b:a", "32k"])):
                path = folder / f"{content}_{seconds}.{fmt}"
                ffmpeg(*src, "-t", str(seconds), "-ac", "2", "-ar", "48000", *codec, str(path))
                made[f"{content} {fmt.upper() if fmt == 'wav' else 'Ogg/Opus'} {label}"] = path
    return made


def run_stage(root: Path, path: Path, mode: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", STAGE_CHILD, str(root), str(path), mode, str(CAP)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"result": f"failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1][:100]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tree(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_analyze(root: Path, path: Path, data_dir: Path, timeout: float = 1800) -> dict[str, Any]:
    """``python -m sidecar analyze --audio F`` from ``root``; the tree's peak RSS sampled every 50 ms."""
    env = {**os.environ, "MOCKAI_DATA_DIR": str(data_dir), "PYTHONPATH": str(root)}
    env.pop("MONGODB_URI", None)
    t = time.perf_counter()
    # The report goes to a file: a long answer's JSON overfills a pipe nobody reads until the end.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "sidecar", "analyze", "--audio", str(path), "--json",
                                 "--question", "Tell me about a project you led."],
                                cwd=root, env=env, stdout=out_file, stderr=err_file, text=True)
        peak_kb = 0
        hwm: dict[int, int] = {}
        while proc.poll() is None and time.perf_counter() - t < timeout:
            pids = _tree(proc.pid)
            peak_kb = max(peak_kb, sum(_status_kb(p, "VmRSS") for p in pids))
            for p in pids:
                hwm[p] = max(hwm.get(p, 0), _status_kb(p, "VmHWM"))
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    elapsed = time.perf_counter() - t
    procs = sorted(hwm.values(), reverse=True)
    result: dict[str, Any] = {"tree_peak_mb": peak_kb / 1024, "process_hwm_mb": [round(v / 1024) for v in procs],
                              "elapsed_s": elapsed, "rc": proc.returncode}
    if proc.returncode == 0:
        report = json.loads(out)
        result["result"] = f"analysed ({len(report['words'])} words)"
    elif proc.returncode == 2:
        result["result"] = "refused: " + err.strip().splitlines()[-1].removeprefix("error: ")[:110]
    else:
        result["result"] = f"failed rc={proc.returncode}: {err.strip().splitlines()[-1][:100] if err.strip() else ''}"
    return result


def mem_available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def stage_table(inputs: dict[str, Path], old: Path | None, old_2h: bool) -> None:
    print("\n### Stages: decode to 16 kHz mono + pitch/energy track (peak RSS of one process, MB)\n")
    print("| input | file MB | old peak | old result | new peak | new result | new peak above the decoded audio |")
    print("|---|---:|---:|---|---:|---|---:|")
    for name, path in inputs.items():
        size = path.stat().st_size / MB
        o: dict[str, Any] = {"result": "not run"}
        if old is not None:
            if "2 h" in name and not (old_2h and name.startswith("silence WAV")):
                o = {"result": "not run (12 GB expected: see silence WAV 2 h)"}
            elif "2 h" in name and mem_available_gb() < 16:
                o = {"result": f"not run: only {mem_available_gb():.0f} GB free"}
            else:
                o = run_stage(old, path, "old")
        n = run_stage(ROOT, path, "new")
        working = (n["peak_mb"] - n["base_mb"] - n.get("audio_mb", 0.0)) if "peak_mb" in n else None
        print(f"| {name} | {size:.1f} | {o.get('peak_mb', float('nan')):.0f} | {o['result']} "
              f"| {n.get('peak_mb', float('nan')):.0f} | {n['result']} | {working:.0f} |", flush=True)


def analyze_table(folder: Path, inputs: dict[str, Path], old: Path | None) -> None:
    speech = {}
    for label, seconds in (("1 min", 60), ("15 min (cap)", 900)):
        path = folder / f"speech_{seconds}.wav"
        ffmpeg("-stream_loop", "-1", "-i", str(SPEECH), "-t", str(seconds), "-ar", "48000", "-ac", "2", str(path))
        speech[f"speech (jfk looped) WAV {label}"] = path
    live = folder / "live_1800.webm"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "1800", "-c:a", "libopus", "-b:a", "32k",
           "-live", "1", "-f", "webm", str(live))
    cases = {**speech,
             "silence Ogg/Opus 1 min": inputs["silence Ogg/Opus 1 min"],
             "silence Ogg/Opus 15 min (cap)": inputs["silence Ogg/Opus 15 min (cap)"],
             "silence Ogg/Opus 30 min": inputs["silence Ogg/Opus 30 min"],
             "silence WAV 2 h": inputs.get("silence WAV 2 h"),
             "silence live WebM 30 min, no length in its header": live}
    print("\n### Whole analyze path: `python -m sidecar analyze --audio F` (process-tree peak RSS, MB)\n")
    print("| input | old tree peak | old result | new tree peak | new per-process peaks | new result |")
    print("|---|---:|---|---:|---|---|")
    data = folder / "data"
    for name, path in cases.items():
        if path is None:
            continue
        o: dict[str, Any] = {"result": "not run"}
        if old is not None:
            if "2 h" in name:
                o = {"result": "not run (the worker alone needs ~12 GB: stage table)"}
            else:
                o = run_analyze(old, path, data)
        n = run_analyze(ROOT, path, data)
        print(f"| {name} | {o.get('tree_peak_mb', float('nan')):.0f} | {o['result']} | {n['tree_peak_mb']:.0f} "
              f"| {n['process_hwm_mb']} | {n['result']} ({n['elapsed_s']:.0f} s) |", flush=True)


def upload_table(size_mb: int, folder: Path) -> None:
    print(f"\n### Upload copy: a {size_mb} MB random upload (RSS of one process, MB)\n")
    print("| copy | RSS before | peak while copying | added by the copy | RSS after the analysis | kept after |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, label in (("old", "getbuffer() + write, upload left in Streamlit's manager"),
                        ("new", "1 MiB reads to an 0600 file, upload removed from the manager")):
        proc = subprocess.run([sys.executable, "-c", UPLOAD_CHILD, str(ROOT), mode, str(size_mb), str(folder)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {label} | {r['before_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['before_mb']:.0f} "
              f"| {r['after_mb']:.0f} | {r['after_mb'] - r['before_mb'] + size_mb:.0f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, help="checkout of the code before the change, run side by side")
    parser.add_argument("--no-analyze", action="store_true", help="skip the whole analyze path (loads the models)")
    parser.add_argument("--no-2h", action="store_true", help="skip the 2-hour inputs")
    parser.add_argument("--old-2h", action="store_true", help="also run the old code on the 2-hour silent WAV (~12 GB)")
    parser.add_argument("--upload-mb", type=int, default=300)
    parser.add_argument("--only", choices=["stages", "analyze", "upload"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["stages", "analyze", "upload"])
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder, with_2h=not args.no_2h) if only & {"stages", "analyze"} else {}
        if "stages" in only:
            stage_table(inputs, args.old, args.old_2h)
        if "analyze" in only and not args.no_analyze:
            analyze_table(folder, inputs, args.old)
        if "upload" in only:
            upload_table(args.upload_mb, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
