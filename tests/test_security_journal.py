"""Issue 9, items 12-13: a full disk (or a failing one) must never break the journal or the workers.

The disk is a real small tmpfs the tests mount (they run as root) and fill with a filler file;
where mounting is not permitted, in-process tests inject the same fault (a short write, then
ENOSPC) into the real ``os.write`` of the journal's files, and the sidecar test lowers the
workers' file-size limit (RLIMIT_FSIZE: writes fail with EFBIG). Data goes to the real database.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import resource
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pymongo
import pytest

import pipeline.writer
from pipeline.writer import BatchedWriter, JournalError, JournalFullError, JournalWriteError, WriterOptions
from sidecar.protocol import AnswerDone, CollectedFrame
from tests.waiting import wait_until

pytestmark = pytest.mark.security


# ---------------------------------------------------------------------- a small real disk
def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class SmallDisk:
    """A small filesystem the test fills (``fill``) and frees (``free``).

    Mounted: a real tmpfs, filled with a filler file; the journal then gets short writes and
    ENOSPC from the kernel. Not mounted (no permission): the same fault is injected into the
    real ``os.write`` for files under ``path`` (a short write, then ENOSPC), in this process.
    """

    def __init__(self, path: Path, mounted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.mounted = mounted
        self._mp = monkeypatch
        self._real_write = os.write
        self.full = False

    def fill(self) -> None:
        self.full = True
        if not self.mounted:
            self._mp.setattr(pipeline.writer.os, "write", self._injected_write)
            return
        fd = os.open(self.path / "filler.bin", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 1):  # to the last byte the filesystem has
                block = b"\0" * size
                while True:
                    try:
                        if os.write(fd, block) < size:
                            break
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.full = False
        if self.mounted:
            (self.path / "filler.bin").unlink()
        else:
            self._mp.setattr(pipeline.writer.os, "write", self._real_write)

    def _injected_write(self, fd: int, data: Any) -> int:
        if not self.full or not _fd_path(fd).startswith(str(self.path)):
            return self._real_write(fd, data)
        if len(data) > 1 and not getattr(self, "_short_done", False):
            self._short_done = True  # like a filesystem with a few bytes left: part of it, then nothing
            return self._real_write(fd, bytes(data[: len(data) // 2]))
        self._short_done = False
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    if not mounted:
        logging.getLogger(__name__).warning("tmpfs mount not permitted: injecting ENOSPC instead")
    try:
        yield SmallDisk(mnt, mounted, monkeypatch)
    finally:
        if mounted and subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _frame(i: int, session: str = "s1") -> dict:
    # Fixed width: every journal line has the same length (an odd one, so a full page cuts one).
    return {"_id": f"{session}-{i:06d}", "session_id": session, "answer_id": "a1", "t": 1_700_000_000_000 + i,
            "face": False, "luma": 12.5}


def _writer(db: pymongo.database.Database, journal: Path, **kw: Any) -> BatchedWriter:
    # Nothing is sent until flush(): the journal only grows, as with the database away.
    opts = WriterOptions(journal_dir=journal, flush_seconds=kw.pop("flush_seconds", 3600),
                         max_docs=kw.pop("max_docs", 10**6), **kw)
    return BatchedWriter(lambda: db, opts)


def _insert_all(w: BatchedWriter, ids: range, acked: list[str], refused: list[str], session: str = "s1") -> None:
    for i in ids:
        doc = _frame(i, session)
        try:
            w.insert("frames", doc)
        except JournalError as exc:
            assert isinstance(exc, JournalWriteError) and exc.journal_full, exc
            assert "disk is full" in str(exc) and "not saved" in str(exc)
            refused.append(doc["_id"])
        else:
            acked.append(doc["_id"])


def _assert_whole_lines(segment_dir: Path) -> None:
    for seg in segment_dir.glob("seg-*.jsonl"):
        data = seg.read_bytes()
        assert not data or data.endswith(b"\n"), f"{seg.name} ends in a partial record"
        for line in data.splitlines():
            json.loads(line)


def _spy_journal_writes(monkeypatch: pytest.MonkeyPatch, under: Path) -> list[tuple[int, int]]:
    """(asked, written) of every os.write into the journal; the real call, only observed."""
    real, seen = os.write, []

    def write(fd: int, data: Any) -> int:
        n = real(fd, data)
        if _fd_path(fd).startswith(str(under)):
            seen.append((len(data), n))
        return n

    monkeypatch.setattr(pipeline.writer.os, "write", write)
    return seen


# ---------------------------------------------------------------------- item 12: the journal
def test_disk_full_on_a_real_small_filesystem_loses_no_acknowledged_write(db, small_disk, monkeypatch, caplog):
    """Fill the disk while inserting: every refused insert raised, every acknowledged one reaches
    the database exactly once after space is back; nothing glued, no JSONDecodeError."""
    journal = small_disk.path / "journal"
    w = _writer(db, journal)
    acked: list[str] = []
    refused: list[str] = []
    for base in (1000, 3000):
        before = len(refused)
        _insert_all(w, range(base - 100, base), acked, refused)  # the open segment has a part-filled page
        assert len(refused) == before
        writes = _spy_journal_writes(monkeypatch, journal) if small_disk.mounted else []
        small_disk.fill()
        _insert_all(w, range(base, base + 200), acked, refused)
        n_refused = len(refused)
        assert n_refused - before >= 150, "the full disk refused writes"
        if small_disk.mounted:
            assert any(n < asked for asked, n in writes), "the kernel cut a record short (the torn-line case)"
        st = w.status()
        assert st.journal_full and "disk is full" in (st.last_write_error or "")
        _assert_whole_lines(journal / "app")  # refused records were cut back off the segment
        small_disk.free()
        # The same open segment takes the next records: before the fix they were glued onto a torn one.
        _insert_all(w, range(base + 500, base + 600), acked, refused)
        assert len(refused) == n_refused
        st = w.status()
        assert not st.journal_full and st.last_write_error is None
        assert w.flush(60), w.status()
    assert db.frames.count_documents({}) == len(acked) == len(set(acked))
    assert set(db.frames.distinct("_id")) == set(acked)
    assert db.frames.count_documents({"_id": {"$in": refused}}) == 0
    st = w.status()
    assert st.pending_ops == 0 and st.segments == 0 and st.quarantined_lines == 0
    assert not (small_disk.path / "journal" / "quarantine.jsonl").exists()
    assert not [r for r in caplog.records if "JSONDecodeError" in r.getMessage() or r.exc_info]
    w.close()


class _Faults:
    """Injected into the real os calls for the journal's files only."""

    def __init__(self, under: Path) -> None:
        self.under = str(under)
        self.short_then_enospc = 0  # this many records: half written, then ENOSPC
        self.ftruncate_eio = 0
        self._half_done = False
        self.real_write, self.real_ftruncate = os.write, os.ftruncate

    def ours(self, fd: int) -> bool:
        return _fd_path(fd).startswith(self.under)

    def write(self, fd: int, data: Any) -> int:
        if self.short_then_enospc and self.ours(fd):
            if not self._half_done:
                self._half_done = True
                return self.real_write(fd, bytes(data[: len(data) // 2]))
            self._half_done = False
            self.short_then_enospc -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real_write(fd, data)

    def ftruncate(self, fd: int, length: int) -> None:
        if self.ftruncate_eio and self.ours(fd):
            self.ftruncate_eio -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.real_ftruncate(fd, length)


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Faults:
    f = _Faults(tmp_path / "j")
    monkeypatch.setattr(pipeline.writer.os, "write", f.write)
    monkeypatch.setattr(pipeline.writer.os, "ftruncate", f.ftruncate)
    return f


def test_injected_short_write_then_enospc_is_refused_and_cut_back(db, tmp_path, faults):
    w = _writer(db, tmp_path / "j")
    acked = [w.insert("frames", _frame(i)) for i in range(20)]
    seg = next((tmp_path / "j" / "app").glob("seg-*.jsonl"))
    size = seg.stat().st_size
    faults.short_then_enospc = 3
    for i in range(20, 23):
        with pytest.raises(JournalWriteError, match=r"disk is full .*not saved") as err:
            w.insert("frames", _frame(i))
        assert err.value.journal_full and err.value.errno == errno.ENOSPC
        assert seg.stat().st_size == size, "the half-written record was cut back"
    assert w.status().journal_full
    acked += [w.insert("frames", _frame(i)) for i in range(23, 40)]  # space is back
    _assert_whole_lines(tmp_path / "j" / "app")
    assert w.flush(30)
    assert sorted(db.frames.distinct("_id")) == sorted(acked) and db.frames.count_documents({}) == 37
    assert w.status().quarantined_lines == 0
    w.close()


def test_partial_record_that_cannot_be_cut_back_is_quarantined_and_later_segments_flush(db, tmp_path, faults):
    """The worst case: the torn record cannot be truncated away (EIO). Later records go to a new
    segment, the torn line is set aside when read, and the queue goes on."""
    w = _writer(db, tmp_path / "j")
    acked = [w.insert("frames", _frame(i)) for i in range(10)]
    faults.short_then_enospc, faults.ftruncate_eio = 1, 1
    with pytest.raises(JournalWriteError):
        w.insert("frames", _frame(10))
    acked += [w.insert("frames", _frame(i)) for i in range(11, 30)]
    assert len(list((tmp_path / "j" / "app").glob("seg-*.jsonl"))) == 2, "a fresh segment after the torn one"
    assert w.flush(30), w.status()
    assert sorted(db.frames.distinct("_id")) == sorted(acked) and db.frames.count_documents({}) == 29
    st = w.status()
    assert st.quarantined_lines == 1 and st.pending_ops == 0 and st.segments == 0
    q = tmp_path / "j" / "quarantine.jsonl"
    assert stat.S_IMODE(q.stat().st_mode) == 0o600
    [entry] = [json.loads(line) for line in q.read_text().splitlines()]
    assert entry["reason"].startswith("torn last line") and '"s1-000010"' in entry["raw"]
    w.close()


def test_hand_corrupted_segment_lines_are_quarantined_and_the_rest_stored(db, tmp_path, caplog):
    dead = tmp_path / "j" / "dead"  # a writer that died and left its journal
    dead.mkdir(parents=True)

    def line(i: int) -> str:
        return json.dumps({"op": "insert", "c": "frames", "d": _frame(i)})

    (dead / "seg-000000000001.jsonl").write_bytes(
        f"{line(1)}\n{{not json at all\n{line(2)}\n[1, 2, 3]\n".encode() + b"\xff\xfe garbage\n"
        + f"{line(3)}\n{line(4)[:30]}".encode()
    )
    (dead / "seg-000000000002.jsonl").write_text(f"{line(5)}\n{line(6)}\n")
    w = _writer(db, tmp_path / "j")
    assert w.status().pending_ops == 9
    assert w.flush(30), w.status()
    assert sorted(db.frames.distinct("_id")) == [f"s1-{i:06d}" for i in (1, 2, 3, 5, 6)]
    st = w.status()
    assert st.quarantined_lines == 4 and st.pending_ops == 0 and st.segments == 0 and st.last_error is None
    q = tmp_path / "j" / "quarantine.jsonl"
    assert stat.S_IMODE(q.stat().st_mode) == 0o600
    entries = [json.loads(x) for x in q.read_text().splitlines()]
    assert [e["line"] for e in entries] == [2, 4, 5, 7]
    assert entries[0]["raw"] == "{not json at all\n" and entries[3]["reason"].startswith("torn last line")
    assert sum("set aside" in r.getMessage() for r in caplog.records) == 4
    w.close()


def test_journal_full_error_says_the_real_size(db, tmp_path):
    w = _writer(db, tmp_path / "j", journal_max_bytes=2048)
    acked = []
    with pytest.raises(JournalFullError) as err:
        for i in range(100):
            acked.append(w.insert("frames", _frame(i)))
    message = str(err.value)
    m = re.fullmatch(r"write journal is full \((\d+\.\d) KiB of 2\.0 KiB\): the database has been unreachable "
                     r"for too long", message)
    assert m, message
    assert abs(float(m.group(1)) * 1024 - w.status().journal_bytes) < 52  # the real size, rounded
    assert isinstance(err.value, JournalError) and err.value.journal_full
    st = w.status()
    assert st.journal_full and st.last_write_error == message
    assert w.flush(30)
    acked.append(w.insert("frames", _frame(500)))  # the database took the journal: room again
    assert not w.status().journal_full
    assert w.flush(30)
    assert sorted(db.frames.distinct("_id")) == sorted(acked)
    w.close()


def test_worker_backlog_holds_answers_and_drops_only_oldest_frames(db, small_disk):
    """The workers' in-memory backlog against a real full disk: bounded for frames, never for answers."""
    from sidecar.journal_backlog import JournalBacklog

    w = _writer(db, small_disk.path / "journal", flush_seconds=0.2)
    backlog = JournalBacklog(w, max_items=5, retry_seconds=0.05)
    small_disk.fill()
    answer = {"_id": "ans-1", "session_id": "s1", "index": 0, "question": "Why?", "status": "recording"}
    assert not backlog.insert("answers", answer)
    for i in range(12):  # until the disk refuses: a few may fit in the segment's last page
        backlog.insert("frames", _frame(i), droppable=True)
    saved: list[str] = []
    assert not backlog.update("answers", "ans-1", {"status": "complete", "transcript": "Because."},
                              on_written=lambda: saved.append("ans-1"))
    assert len(backlog) == 5 and backlog.dropped > 0
    st = backlog.status()
    assert st["journal_full"] and "disk is full" in st["journal_error"] and st["journal_dropped"] == backlog.dropped
    assert not backlog.retry(force=True)  # still full: kept
    small_disk.free()
    wait_until(backlog.retry, "the held writes written once space is back", 30)
    assert len(backlog) == 0 and saved == ["ans-1"] and backlog.status()["journal_error"] is None
    assert w.flush(30)
    stored = db.answers.find_one({"_id": "ans-1"})
    assert stored["status"] == "complete" and stored["transcript"] == "Because."
    frames = sorted(db.frames.distinct("_id"))
    assert len(frames) == 12 - backlog.dropped and frames[-3:] == [f"s1-{i:06d}" for i in (9, 10, 11)]
    w.close()


# ---------------------------------------------------------------------- item 13: the workers
def _video_frames(shared_data: Path, n: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(shared_data / "video" / "baseline.mp4")) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="bgr24", width=640, height=360))
            if len(out) == n:
                break
    return out


class _WorkerDisk:
    """A full disk for worker processes: the tmpfs filled, or (no mount) their file-size limit at 0."""

    def __init__(self, disk: SmallDisk, pids: list[int]) -> None:
        self.disk, self.pids = disk, pids
        self._limits: dict[int, tuple[int, int]] = {}

    def fill(self) -> None:
        if self.disk.mounted:
            self.disk.fill()
            return
        for pid in self.pids:
            self._limits[pid] = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, self._limits[pid][1]))

    def free(self) -> None:
        if self.disk.mounted:
            self.disk.free()
            return
        for pid, limits in self._limits.items():
            resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)


@pytest.mark.slow
def test_workers_keep_working_on_a_full_disk_and_save_everything_later(
        small_disk, mongo_uri, shared_data, tmp_path, monkeypatch):
    """The real sidecar (both workers, real models) with its journal on a full disk: the emotion
    worker keeps analysing (no crash, no restart), the speech worker grades the answer and holds
    it (even across a crash of that worker), the sidebar and the answer's note say so, and once
    space is back everything is stored, once.
    (The "Finish answer" click itself needs a browser's WebRTC, which AppTest cannot run: the
    result it shows is the one this test gets from the real sidecar.)"""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import ui.session
    from pipeline import interview as iv
    from pipeline.media import load_audio
    from pipeline.questions import Question
    from pipeline.settings import Settings, get_settings
    from sidecar.supervisor import Sidecar
    from tests.pages_support import APP
    from ui.status import held_answer_note

    db_name = f"fulldisk_{uuid.uuid4().hex[:8]}"
    settings = Settings(MONGODB_URI=mongo_uri, db_name=db_name, data_dir=small_disk.path, flush_seconds=0.5,
                        emotion_model="fer", face_detector="opencv", worker_backlog_retry_seconds=0.2)
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, tz_aware=True)
    db = client[db_name]
    car = Sidecar(settings, store=True).start()
    try:
        assert car.wait_ready(300), car.status()
        pids = {n: w.process.pid for n, w in car.workers.items()}
        disk = _WorkerDisk(small_disk, list(pids.values()))
        disk.fill()

        question = Question("q1", "Quote a famous speech.", "Ask what you can do for your country.",
                            ("ask what you can do for your country",), "behavioural", 60)
        session_id = uuid.uuid4().hex
        start = iv.answer_start(session_id, 0, question)
        frame_ids: list[str] = []
        car.subscribe(lambda ev: frame_ids.append(ev.record["_id"])
                      if isinstance(ev, CollectedFrame) and ev.answer_id == start.answer_id else None)
        held_done: list[dict] = []
        car.subscribe(lambda ev: held_done.append(dict(ev.summary))
                      if isinstance(ev, AnswerDone) and ev.answer_id == start.answer_id else None)
        car.start_answer(start)
        audio = load_audio(shared_data / "speech" / "jfk.flac")
        for i in range(0, len(audio), 8000):
            car.push_audio(start.answer_id, start.started_ms + i * 1000 // 16000, audio[i:i + 8000])
        images = _video_frames(shared_data, 12)
        for k, image in enumerate(images):
            assert car.push_frame(image, start.started_ms + 100 + k * 133, session_id, start.answer_id, block=True,
                                  collect=True)
        wait_until(lambda: len(frame_ids) == len(images), "every frame analysed", 120)
        status = wait_until(lambda: (s := car.status())["workers"]["emotion"]["journal_backlog"] == len(images)
                            and s["workers"]["speech"]["journal_backlog"] == 1 and s, "the held writes reported", 120)
        assert status["journal_full"] and status["journal_error"]
        assert db.frames.count_documents({"answer_id": start.answer_id}) == 0

        # The sidebar of the real app (this server's sidecar is the one above) says so.
        monkeypatch.setenv("MONGODB_URI", mongo_uri)
        monkeypatch.setenv("MOCKAI_DB_NAME", db_name)
        monkeypatch.setenv("MOCKAI_DATA_DIR", str(tmp_path / "app"))  # the app's own journal: a normal disk
        monkeypatch.delenv("MOCKAI_ADMIN_PASSWORD", raising=False)
        monkeypatch.setattr(ui.session, "get_sidecar", lambda: car)
        get_settings.cache_clear()
        st.cache_resource.clear()
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception, [e.value for e in at.exception]
        sidebar = " ".join(w.value for w in at.sidebar.warning)
        assert ("Analysis results cannot be saved right now (the server's disk is full): 13 kept in memory, saved "
                "when space is back.") in sidebar, sidebar

        # The end of the answer ("Finish answer"): graded, held, and the page's note says so.
        car.end_answer(start.answer_id, iv.now_ms())
        result = car.wait_result(start.answer_id, 240)
        assert result is not None, car.status()
        assert result["held"] and result["journal_full"] and not result["stored"]
        assert result["grade"]["score"] is not None
        assert "what you can do for your country" in result["transcript"].lower()
        assert held_answer_note(result) == (
            "Your answer is analysed but could not be saved yet (the server's disk is full); it is kept in "
            "memory and will be saved when space is back.")
        wait_until(lambda: car.status()["workers"]["speech"]["journal_backlog"] == 2, "the held update reported", 120)

        # Both kept working: same processes, no restart, frames still analysed while full.
        car.push_frame(images[0], iv.now_ms(), session_id, "__preview__", block=True)  # never stored
        n_events = len(frame_ids)
        car.push_frame(images[1], start.started_ms + 5000, session_id, start.answer_id, block=True, collect=True)
        wait_until(lambda: len(frame_ids) == n_events + 1, "a frame analysed on the full disk", 120)
        status = car.status()
        assert {n: w.process.pid for n, w in car.workers.items()} == pids
        assert all(w["restarts"] == 0 and w["alive"] for w in status["workers"].values()), status

        # The speech worker dies while it holds the answer: the supervisor kept the audio, the
        # restarted worker does the answer again and holds it again. Nothing is lost.
        os.kill(pids["speech"], signal.SIGKILL)
        wait_until(lambda: len(held_done) == 2, "the answer re-done by a restarted worker", 300)
        assert held_done[1]["held"] and car.workers["speech"].restarts == 1
        assert car.workers["emotion"].process.pid == pids["emotion"] and car.workers["emotion"].restarts == 0

        disk.free()  # space is back
        wait_until(lambda: car.status()["journal_backlog"] == 0 and not car.status()["journal_error"], "the backlogs written", 120)
        wait_until(lambda: (db.answers.find_one({"_id": start.answer_id}) or {}).get("grade"), "the answer stored", 120)
        stored = db.answers.find_one({"_id": start.answer_id})
        assert stored["status"] == "complete" and stored["session_id"] == session_id
        assert "what you can do for your country" in stored["transcript"].lower()
        wait_until(lambda: db.frames.count_documents({"answer_id": start.answer_id}) == len(frame_ids), "every frame stored", 120)
        assert sorted(db.frames.distinct("_id", {"answer_id": start.answer_id})) == sorted(frame_ids)
        assert db.answers.count_documents({"session_id": session_id}) == 1
        assert db.frames.count_documents({"answer_id": "__preview__"}) == 0
        wait_until(lambda: car.result(start.answer_id).get("stored"), "the page's result marked saved", 120)
        assert not car.result(start.answer_id)["held"]
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception and "cannot be saved" not in " ".join(w.value for w in at.sidebar.warning)
        assert car.status()["journal_dropped"] == 0
    finally:
        car.stop()
        with contextlib.suppress(Exception):
            st.cache_resource.clear()
            get_settings.cache_clear()
        client.drop_database(db_name)
        client.close()
