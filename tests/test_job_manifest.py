"""Batch manifests (pipeline.job_manifest): rows, every kind of problem with its line, path escapes,
folder mode, and the job specs (same manifest twice = same batch and job ids)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import jobs
from pipeline.job_manifest import (
    MAX_FIELD_BYTES,
    QuestionChoice,
    parse_manifest,
    scan_folder,
    shipped_sets,
    specs_for,
)
from pipeline.uploads import MB

CAPS = {"max_upload_mb": 1, "max_batch_items": 5}


def _files(folder: Path, *names: str, size: int = 100) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\0" * size)


def _parse(folder: Path, text: str | bytes, owner: str = "coach1", **caps: int):
    content = text.encode() if isinstance(text, str) else text
    return parse_manifest(content, owner, folder=folder, **{**CAPS, **caps})


def _one_problem(manifest) -> str:
    assert not manifest.ok and len(manifest.problems) == 1, manifest.problems
    return manifest.problems[0]


def test_rows_from_a_clean_manifest(tmp_path):
    _files(tmp_path, "ada.mp4", "sub/grace.m4a", "alan.wav")
    behavioural = shipped_sets()["behavioural"]
    m = _parse(tmp_path, "file,candidate,question_set,question,reference,key_points,media\n"
                         "ada.mp4,Ada Lovelace,behavioural,2,,,\n"
                         f"sub/grace.m4a,,behavioural,\"{behavioural.questions[0].question}\",,,\n"
                         "alan.wav,Alan,,Why queues?,Because bursts.,bursts; back-pressure ;,video\n")
    assert m.ok, m.problems
    ada, grace, alan = m.rows
    assert (ada.line, ada.candidate, ada.question, ada.media_kind) == (2, "Ada Lovelace",
                                                                       behavioural.questions[1].question, "video")
    assert ada.reference == behavioural.questions[1].reference and ada.key_points == behavioural.questions[1].key_points
    assert ada.question_set == "behavioural" and ada.role == behavioural.role
    assert ada.path == (tmp_path / "ada.mp4").resolve() and ada.size == 100
    assert grace.candidate == "grace" and grace.media_kind == "audio"  # stem; audio by extension
    assert grace.question == behavioural.questions[0].question
    assert (alan.question, alan.reference, alan.key_points, alan.media_kind, alan.question_set) == (
        "Why queues?", "Because bursts.", ("bursts", "back-pressure"), "video", None)


def test_same_manifest_same_batch_and_job_ids(tmp_path):
    _files(tmp_path, "a.mp4")
    text = "file,question\na.mp4,Tell me about queues\n"
    first, again, other_owner = _parse(tmp_path, text), _parse(tmp_path, text), _parse(tmp_path, text, "coach2")
    assert first.batch_id == again.batch_id != other_owner.batch_id
    assert first.batch_id != _parse(tmp_path, text + "a.mp4,Another question\n").batch_id
    spec = specs_for(first.rows, "coach1", first.batch_id)[0]
    assert (spec.owner, spec.source, spec.batch_id, spec.kind, spec.filename) == (
        "coach1", "batch", first.batch_id, "analyse", "a.mp4")
    same = specs_for(again.rows, "coach1", again.batch_id)[0]
    assert jobs.job_id_for(spec, "sha") == jobs.job_id_for(same, "sha")
    other = specs_for(other_owner.rows, "coach2", other_owner.batch_id)[0]
    assert jobs.job_id_for(spec, "sha") != jobs.job_id_for(other, "sha")


@pytest.mark.parametrize(("row", "expected"), [
    ("missing.mp4,Q", "line 2: missing file 'missing.mp4'"),
    (",Q", "line 2: no file named"),
    ("a.mp4,", "line 2: empty question"),
    ("a.mp4,<b></b>", "line 2: empty question"),
    ("a.mp4,Q,nosuchset", "line 2: unknown question set 'nosuchset'"),
    ("a.mp4,7,behavioural", "line 2: question set 'behavioural' has no question '7' (give its number, 1-6,"),
    ("a.mp4,0,behavioural", "line 2: question set 'behavioural' has no question '0'"),
    ("a.mp4,Not in the set,behavioural", "line 2: question set 'behavioural' has no question 'Not in the set'"),
    ("a.mp4,,behavioural", "line 2: no question given for set 'behavioural'"),
    ("a.mp4,Q,,,,,sideways", "line 2: media must be 'video' or 'audio', not 'sideways'"),
    ("a.mp4,Q,,,,,,extra", "line 2: 8 values but the header names 7 columns"),
    (f"a.mp4,{'q' * 2001}", "line 2: the question is 2001 characters; at most 2000"),
    (f"a.mp4,Q,,{'c' * 201}", "line 2: the candidate is 201 characters; at most 200"),
    (f"a.mp4,Q,,,{'r' * 10001}", "line 2: the reference is 10001 characters; at most 10000"),
    ("a.mp4,Q,,,," + ";".join(f"k{i}" for i in range(11)), "line 2: 11 key points; at most 10"),
    ("big.mp4,Q", "line 2: 'big.mp4' is 1.5 MB; recordings can be at most 1 MB"),
])
def test_each_problem_names_its_line(tmp_path, row, expected):
    _files(tmp_path, "a.mp4")
    _files(tmp_path, "big.mp4", size=MB + MB // 2)
    m = _parse(tmp_path, f"file,question,question_set,candidate,reference,key_points,media\n{row}\n")
    assert _one_problem(m).startswith(expected), m.problems
    assert m.rows == []


def test_problems_on_later_lines_keep_their_numbers(tmp_path):
    _files(tmp_path, "a.mp4")
    m = _parse(tmp_path, 'file,question\n\na.mp4,"two\nlines"\nmissing.mp4,Q\n')
    assert _one_problem(m).startswith("line 5: missing file"), m.problems  # blank line 2; row 3-4 spans two
    assert [r.line for r in m.rows] == [3]


@pytest.mark.parametrize(("content", "expected"), [
    (b"file,question\na.mp4,caf\xe9\n", "line 2: the manifest is not UTF-8 text"),
    (b"", "the manifest is empty"),
    (b"file,question\n", "the manifest names no recordings"),
    (b"question,candidate\nQ,A\n", "line 1: the header has no 'file' column"),
    (b"file,questoin\na.mp4,Q\n", "line 1: unknown column 'questoin'"),
    (b"file,file\na.mp4,b.mp4\n", "line 1: column 'file' appears more than once"),
    (b'file,question\na.mp4,"unclosed\n', "line 2: the CSV cannot be read"),
    (b"file,question\na.mp4,Q\x00\n", "line 2: the manifest contains a NUL byte"),
    (b"file,question\na.mp4," + b"x" * (MAX_FIELD_BYTES + 1) + b"\n", "line 2: the question field is over 64 KiB"),
    (b"file,question\na.mp4," + b"x" * (3 * MAX_FIELD_BYTES) + b"\n", "line 2: the CSV cannot be read (a field over"),
])
def test_unreadable_manifests(tmp_path, content, expected):
    _files(tmp_path, "a.mp4")
    assert _one_problem(_parse(tmp_path, content)).startswith(expected)


def test_a_utf8_bom_is_fine(tmp_path):
    _files(tmp_path, "a.mp4")
    m = _parse(tmp_path, "\ufefffile,question\na.mp4,Café?\n".encode())
    assert m.ok and m.rows[0].question == "Café?"


def test_more_rows_than_the_batch_cap(tmp_path):
    _files(tmp_path, "a.mp4")
    m = _parse(tmp_path, "file,question\n" + "a.mp4,Q\n" * 6)
    assert any(p.startswith("the manifest has more than 5 rows (jobs.max_batch_items)") for p in m.problems)
    assert not m.ok


def test_paths_outside_the_manifest_folder_are_refused(tmp_path):
    inside, outside = tmp_path / "batch", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    _files(outside, "secret.mp4")
    _files(inside, "ok.mp4")
    os.symlink(outside / "secret.mp4", inside / "link.mp4")
    os.symlink(outside, inside / "dirlink")
    os.symlink(inside / "ok.mp4", inside / "inner.mp4")  # a link that stays inside is fine
    for file in ("../elsewhere/secret.mp4", str(outside / "secret.mp4"), "link.mp4", "dirlink/secret.mp4",
                 "sub/../../elsewhere/secret.mp4", "/etc/passwd"):
        problem = _one_problem(_parse(inside, f"file,question\n{file},Q\n"))
        assert problem.startswith("line 2: ") and "is outside the manifest's folder" in problem, problem
    assert _parse(inside, f"file,question\n{inside / 'ok.mp4'},Q\ninner.mp4,Q\n").ok


def test_uploaded_files_are_matched_by_name(tmp_path):
    m = parse_manifest(b"file,question\nada.mp4,Q\n../ada.mp4,Q\nother.mp4,Q\n", "coach1",
                       uploads={"ada.mp4": 10, "other.mp4": 2 * MB}, **CAPS)
    assert [r.file for r in m.rows] == ["ada.mp4"] and m.rows[0].path is None and m.rows[0].size == 10
    assert m.problems[0] == "line 3: '../ada.mp4' was not uploaded (uploaded files have no folders: write 'ada.mp4')"
    assert m.problems[1].startswith("line 4: 'other.mp4' is 2.0 MB; recordings can be at most 1 MB")
    with pytest.raises(ValueError, match="exactly one"):
        parse_manifest(b"file\n", "x", folder=tmp_path, uploads={}, **CAPS)


def test_folder_mode(tmp_path):
    _files(tmp_path, "zed.webm", "ada.mp4", "bob.flac", "notes.txt", "sub/deeper.mp4")
    choice = QuestionChoice(question_set="behavioural", number=3)
    m = scan_folder(tmp_path, "coach1", choice, **CAPS)
    assert m.ok, m.problems
    third = shipped_sets()["behavioural"].questions[2]
    assert [(r.file, r.candidate, r.media_kind) for r in m.rows] == [
        ("ada.mp4", "ada", "video"), ("bob.flac", "bob", "audio"), ("zed.webm", "zed", "video")]
    assert {r.question for r in m.rows} == {third.question} and m.rows[0].key_points == third.key_points
    assert m.batch_id == scan_folder(tmp_path, "coach1", choice, **CAPS).batch_id
    assert m.batch_id != scan_folder(tmp_path, "coach1", QuestionChoice(question="Other?"), **CAPS).batch_id
    free = scan_folder(tmp_path, "coach1", QuestionChoice(question="Why?", reference="Because."), **CAPS)
    assert {(r.question, r.reference, r.question_set) for r in free.rows} == {("Why?", "Because.", None)}


def test_folder_mode_problems(tmp_path):
    _files(tmp_path, "a.mp4", "b.mp4")
    _files(tmp_path, "big.mp4", size=2 * MB)
    m = scan_folder(tmp_path, "c", QuestionChoice(question="Q"), **CAPS)
    assert _one_problem(m).startswith("big.mp4: 'big.mp4' is 2.0 MB")
    no_question = scan_folder(tmp_path, "c", QuestionChoice(), **CAPS).problems  # one line per file and problem
    assert [p.split(": ")[0] for p in no_question] == ["a.mp4", "b.mp4", "big.mp4", "big.mp4"]
    assert no_question[0].startswith("a.mp4: empty question") and "is 2.0 MB" in no_question[2]
    assert _one_problem(scan_folder(tmp_path / "none", "c", QuestionChoice(question="Q"), **CAPS)).endswith(
        "is not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _one_problem(scan_folder(empty, "c", QuestionChoice(question="Q"), **CAPS)).startswith("no recordings")
    _files(tmp_path, *(f"x{i}.mp4" for i in range(5)))
    assert "at most 5" in _one_problem(scan_folder(tmp_path, "c", QuestionChoice(question="Q"), **CAPS))
