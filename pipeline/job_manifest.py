"""Batch manifests: a CSV naming recordings and their questions (or a folder of recordings with one
question), checked row by row into rows or plain problems with line numbers; rows become job specs."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.jobs import JobSpec, Submitted
from pipeline.question_schema import MAX_KEY_POINT_CHARS, MAX_KEY_POINTS, QuestionSet
from pipeline.questions import load_builtin_sets
from pipeline.text import clean_text
from pipeline.uploads import MB

COLUMNS = ("file", "candidate", "question_set", "question", "reference", "key_points", "media")
AUDIO_SUFFIXES = (".m4a", ".mp3", ".wav", ".flac", ".ogg", ".opus", ".aac")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
MEDIA_SUFFIXES = AUDIO_SUFFIXES + VIDEO_SUFFIXES
MAX_FIELD_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 16 * MB
CANDIDATE_CHARS, QUESTION_CHARS, REFERENCE_CHARS = 200, 2000, 10000
SHOWN_CHARS = 80  # how much of a bad value a problem quotes


@dataclass(frozen=True)
class ManifestRow:
    line: int  # the manifest line the row starts on (folder mode: the file's position, 1-based)
    file: str  # as written in the manifest: the uploaded file's name on the Batch page
    path: Path | None  # the resolved file on this machine (None for uploaded files)
    candidate: str
    question: str
    reference: str = ""
    key_points: tuple[str, ...] = ()
    media_kind: str = "video"
    question_set: str | None = None
    role: str = "batch"
    size: int = 0


@dataclass
class Manifest:
    rows: list[ManifestRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    batch_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.rows)


@dataclass(frozen=True)
class QuestionChoice:
    """Folder mode: the one question every recording answers (free text, or a set and its number)."""

    question: str = ""
    question_set: str | None = None
    number: int | None = None
    reference: str = ""
    key_points: tuple[str, ...] = ()


def shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")


def media_kind_for(name: str) -> str:
    return "audio" if Path(name).suffix.lower() in AUDIO_SUFFIXES else "video"


def batch_id_for(content: bytes, owner: str) -> str:
    """The same manifest (same bytes) submitted twice by the same owner is the same batch, so its jobs
    get the same ids (pipeline.jobs.job_id_for) and are stored once."""
    return hashlib.sha256(b"batch\x1f" + owner.encode("utf-8") + b"\x1f" + content).hexdigest()[:32]


def shipped_sets() -> dict[str, QuestionSet]:
    return {s.id: s for s in load_builtin_sets()}


def _text(value: str, cap: int, name: str, problems: list[str], where: str) -> str:
    if len(value) > cap:
        problems.append(f"{where}: the {name} is {len(value)} characters; at most {cap} are allowed")
        return ""
    try:
        return clean_text(value, cap, field=name)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return ""


def _key_points(raw: str, problems: list[str], where: str) -> tuple[str, ...]:
    points = [p.strip() for p in raw.split(";") if p.strip()]
    if len(points) > MAX_KEY_POINTS:
        problems.append(f"{where}: {len(points)} key points; at most {MAX_KEY_POINTS} are allowed")
        return ()
    return tuple(_text(p, MAX_KEY_POINT_CHARS, "key point", problems, where) for p in points)


def _pick_question(sets: Mapping[str, QuestionSet], set_id: str, question: str, problems: list[str],
                   where: str) -> tuple[str, str, tuple[str, ...], str] | None:
    """(question, reference, key points, role) of ``question`` (1-based number, exact text or id) in a set."""
    qset = sets.get(set_id)
    if qset is None:
        problems.append(f"{where}: unknown question set {shown(set_id)} (known: {', '.join(sorted(sets))})")
        return None
    n = len(qset.questions)
    if not question:
        problems.append(f"{where}: no question given for set {shown(set_id)}: give its number (1-{n}) or exact text")
        return None
    found = None
    if question.isdigit():
        number = int(question)
        found = qset.questions[number - 1] if 1 <= number <= n else None
    else:
        found = next((q for q in qset.questions if question in (q.question, q.id)), None)
    if found is None:
        problems.append(f"{where}: question set {shown(set_id)} has no question {shown(question)} "
                        f"(give its number, 1-{n}, or its exact text)")
        return None
    return found.question, found.reference, found.key_points, qset.role


def _locate(file: str, folder: Path | None, uploads: Mapping[str, int] | None, problems: list[str],
            where: str) -> tuple[Path | None, int] | None:
    """The row's file: inside ``folder`` (symlinks resolved) or among the uploaded names; its size."""
    if uploads is not None:
        if file not in uploads:
            base = Path(file).name
            hint = (f"uploaded files have no folders: write {shown(base)}" if base != file and base in uploads
                    else "upload it with the manifest; the name must match exactly")
            problems.append(f"{where}: {shown(file)} was not uploaded ({hint})")
            return None
        return None, int(uploads[file])
    assert folder is not None
    root = folder.resolve()
    try:
        path = (root / file).resolve()  # an absolute `file` replaces root: still checked below
    except (OSError, RuntimeError) as exc:  # a symlink loop
        problems.append(f"{where}: {shown(file)} cannot be resolved ({type(exc).__name__})")
        return None
    if not path.is_relative_to(root):
        problems.append(f"{where}: {shown(file)} is outside the manifest's folder; recordings must be in it "
                        "or below it")
        return None
    if not path.is_file():
        problems.append(f"{where}: missing file {shown(file)}")
        return None
    return path, path.stat().st_size


def _row(values: Mapping[str, str], line: int, folder: Path | None, uploads: Mapping[str, int] | None,
         sets: Mapping[str, QuestionSet], max_upload_mb: int, problems: list[str]) -> ManifestRow | None:
    where = f"line {line}"
    before = len(problems)
    for name, value in values.items():
        if len(value.encode("utf-8")) > MAX_FIELD_BYTES:
            problems.append(f"{where}: the {name} field is over {MAX_FIELD_BYTES // 1024} KiB")
    if len(problems) > before:
        return None
    file = values.get("file", "").strip()
    if not file:
        problems.append(f"{where}: no file named (the 'file' column is empty)")
        return None
    located = _locate(file, folder, uploads, problems, where)
    if located is not None and located[1] > max_upload_mb * MB:
        problems.append(f"{where}: {shown(file)} is {located[1] / MB:.1f} MB; recordings can be at most "
                        f"{max_upload_mb} MB (media.max_upload_mb)")
    candidate = _text(values.get("candidate", "").strip() or Path(file).stem, CANDIDATE_CHARS, "candidate",
                      problems, where)
    set_id = values.get("question_set", "").strip()
    raw_question = values.get("question", "").strip()
    reference = _text(values.get("reference", "").strip(), REFERENCE_CHARS, "reference", problems, where)
    key_points = _key_points(values.get("key_points", ""), problems, where)
    role = "batch"
    if set_id:
        picked = _pick_question(sets, set_id, raw_question, problems, where)
        if picked is None:
            return None
        question, set_reference, set_points, role = picked
        reference, key_points = reference or set_reference, key_points or set_points
    else:
        question = _text(raw_question, QUESTION_CHARS, "question", problems, where)
        if not question and len(raw_question) <= QUESTION_CHARS:
            problems.append(f"{where}: empty question (give the question's text, or a question_set and its number)")
    media = values.get("media", "").strip().lower() or media_kind_for(file)
    if media not in ("video", "audio"):
        problems.append(f"{where}: media must be 'video' or 'audio', not {shown(media)}")
    if len(problems) > before or located is None:
        return None
    return ManifestRow(line, file, located[0], candidate, question, reference, key_points, media,
                       set_id or None, role, located[1])


def parse_manifest(content: bytes, owner: str, *, max_upload_mb: int, max_batch_items: int,
                   folder: Path | None = None, uploads: Mapping[str, int] | None = None,
                   sets: Mapping[str, QuestionSet] | None = None) -> Manifest:
    """Check a CSV manifest. Its files are looked up in ``folder`` (the CLI: the manifest's folder) or,
    when ``uploads`` (name -> size) is given, among the uploaded files (the Batch page)."""
    if (folder is None) == (uploads is None):
        raise ValueError("give exactly one of folder and uploads")
    out = Manifest(batch_id=batch_id_for(content, owner))
    if len(content) > MAX_MANIFEST_BYTES:
        out.problems.append(f"the manifest is {len(content) / MB:.1f} MB; at most {MAX_MANIFEST_BYTES // MB} MB")
        return out
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        out.problems.append(f"line {line}: the manifest is not UTF-8 text (save it as CSV UTF-8)")
        return out
    if "\x00" in text:
        out.problems.append(f"line {text[:text.index(chr(0))].count(chr(10)) + 1}: the manifest contains a NUL "
                            "byte; it is not a text CSV file")
        return out
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    sets = shipped_sets() if sets is None else sets
    header: list[str] | None = None
    count, start = 0, 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = _header(record, line, out.problems)
                if header is None:
                    return out
                continue
            count += 1
            if count > max_batch_items:
                out.problems.append(f"the manifest has more than {max_batch_items} rows (jobs.max_batch_items); "
                                    "split it into smaller batches")
                break
            if len(record) > len(header):
                out.problems.append(f"line {line}: {len(record)} values but the header names {len(header)} columns")
                continue
            values = dict(zip(header, [*record, *[""] * (len(header) - len(record))], strict=True))
            row = _row(values, line, folder, uploads, sets, max_upload_mb, out.problems)
            if row is not None:
                out.rows.append(row)
    except csv.Error as exc:
        reason = f"a field over {MAX_FIELD_BYTES // 1024} KiB" if "field limit" in str(exc) else str(exc)
        out.problems.append(f"line {start}: the CSV cannot be read ({reason})")
    if header is None and not out.problems:
        out.problems.append("the manifest is empty: it needs a header row (file,question,...) and one row per "
                            "recording")
    elif not out.rows and not out.problems:
        out.problems.append("the manifest names no recordings (only a header row)")
    return out


def _header(record: Sequence[str], line: int, problems: list[str]) -> list[str] | None:
    names = [c.strip().lower() for c in record]
    before = len(problems)
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        problems.append(f"line {line}: unknown column {', '.join(shown(n) for n in unknown)} "
                        f"(columns: {', '.join(COLUMNS)})")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"line {line}: column {', '.join(shown(n) for n in twice)} appears more than once")
    if "file" not in names:
        problems.append(f"line {line}: the header has no 'file' column (the first row must name the columns)")
    return None if len(problems) > before else names


def scan_folder(folder: Path, owner: str, choice: QuestionChoice, *, max_upload_mb: int, max_batch_items: int,
                sets: Mapping[str, QuestionSet] | None = None) -> Manifest:
    """Every media file directly in ``folder`` (sorted by name), all answering ``choice``; the candidate is
    the file name's stem."""
    out = Manifest()
    root = folder.resolve()
    if not root.is_dir():
        out.problems.append(f"{shown(str(folder))} is not a folder")
        return out
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file())
    if not files:
        out.problems.append(f"no recordings in the folder (looked for {' '.join(MEDIA_SUFFIXES)})")
        return out
    if len(files) > max_batch_items:
        out.problems.append(f"the folder has {len(files)} recordings; at most {max_batch_items} "
                            "(jobs.max_batch_items) can be one batch")
        return out
    values = {"question": str(choice.number) if choice.question_set and choice.number else choice.question,
              "question_set": choice.question_set or "", "reference": choice.reference,
              "key_points": ";".join(choice.key_points)}
    sets = shipped_sets() if sets is None else sets
    listing = hashlib.sha256()
    for i, path in enumerate(files, start=1):
        problems: list[str] = []
        row = _row({**values, "file": path.name}, i, root, None, sets, max_upload_mb, problems)
        out.problems.extend(p.replace(f"line {i}:", f"{path.name}:", 1) for p in problems)
        if row is not None:
            out.rows.append(row)
            stat = path.stat()
            listing.update(f"{path.name}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    listing.update(repr(sorted(values.items())).encode())
    out.batch_id = batch_id_for(b"folder\x1f" + str(root).encode() + b"\x1f" + listing.digest(), owner)
    return out


def outcome(submitted: Submitted) -> str:
    """What a submission did, in words: "queued", "queued again" (it had failed or was cancelled) or
    "already <status>" (the same recording, question and batch were submitted before)."""
    if not submitted.created:
        return f"already {submitted.job.get('status')}"
    history = submitted.job.get("history") or []
    return "queued again" if history and history[-1].get("event") == "submitted again" else "queued"


def specs_for(rows: Sequence[ManifestRow], owner: str, batch_id: str) -> list[JobSpec]:
    """One analysis job per row, all in batch ``batch_id``, each answer in a session of its own."""
    return [JobSpec(owner=owner, question=r.question, reference=r.reference, key_points=r.key_points,
                    kind="analyse", candidate=r.candidate, role=r.role, source="batch", media_kind=r.media_kind,
                    filename=Path(r.file).name, batch_id=batch_id, question_set=r.question_set)
            for r in rows]
