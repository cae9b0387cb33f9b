"""Built-in question sets, custom questions and their copy in the ``questions`` collection."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from pymongo.database import Database

from pipeline import questions as qmod
from pipeline.questions import (
    MAX_KEY_POINT_CHARS,
    MAX_KEY_POINTS,
    MAX_QUESTION_CHARS,
    MAX_REFERENCE_CHARS,
    QuestionSetError,
    custom_question,
    load_builtin_sets,
    sets_from_db,
    sync_to_db,
)
from pipeline.storage import ensure_indexes
from pipeline.text import clean_text

EXPECTED_SETS = {"behavioural", "software_engineering", "data_science", "product_management"}


@pytest.fixture(scope="module")
def sets() -> list[qmod.QuestionSet]:
    return load_builtin_sets()


# --- the shipped sets ------------------------------------------------------------------------


def test_every_builtin_set_loads(sets: list[qmod.QuestionSet]) -> None:
    assert {s.id for s in sets} == EXPECTED_SETS
    assert [s.id for s in sets] == sorted(s.id for s in sets)
    files = sorted(p.stem for p in qmod.SETS_DIR.glob("*.json"))
    assert files == [s.id for s in sets]


def test_sets_are_well_formed(sets: list[qmod.QuestionSet]) -> None:
    for s in sets:
        assert s.title and s.role and s.description, s.id
        assert len(s.questions) >= 6, s.id
        for q in s.questions:
            where = f"{s.id}:{q.id}"
            assert q.question.endswith(("?", ".")), where
            assert 3 <= len(q.key_points) <= 5, where
            words = len(q.reference.split())
            assert 60 <= words <= 150, f"{where}: reference has {words} words"
            for kp in q.key_points:
                # Short enough to match a spoken span (the grader slides 8-word windows).
                assert 2 <= len(kp.split()) <= 12, f"{where}: {kp!r}"
            assert q.type in qmod.QUESTION_TYPES and q.type != "custom", where
            assert 30 <= q.seconds <= 300, where
            # Text is already clean, so what the grader sanitises is what the author wrote.
            for text in (q.question, q.reference, *q.key_points):
                assert clean_text(text, 10_000) == text, where


def test_ids_are_unique(sets: list[qmod.QuestionSet]) -> None:
    doc_ids = [f"{s.id}:{q.id}" for s in sets for q in s.questions]
    assert len(doc_ids) == len(set(doc_ids))
    assert len({s.id for s in sets}) == len(sets)
    questions = [q.question.casefold() for s in sets for q in s.questions]
    assert len(questions) == len(set(questions)), "the same question appears twice"


def test_behavioural_key_points_cover_star(sets: list[qmod.QuestionSet]) -> None:
    """Each behavioural question's key points walk STAR in order: Situation, Task, Action(s), Result."""
    behavioural = next(s for s in sets if s.id == "behavioural")
    assert len(behavioural.questions) == 6
    assert "STAR" in behavioural.description
    task = re.compile(r"\b(i had to|i owned|i volunteered|i was responsible|was mine|i needed to)\b")
    result = re.compile(r"\b(improved|succeeded|delivered|shipped|learned|fixed|adopted|happy|turned out)\b")
    for q in behavioural.questions:
        assert q.type == "behavioural", q.id
        situation, task_kp, *actions, result_kp = (kp.lower() for kp in q.key_points)
        assert not task.search(situation) and not result.search(situation), f"{q.id}: situation {situation!r}"
        assert task.search(task_kp), f"{q.id}: second key point should be the task: {task_kp!r}"
        assert actions and all(a.startswith(("i ", "we ")) for a in actions), f"{q.id}: actions {actions!r}"
        assert result.search(result_kp), f"{q.id}: last key point should be the result: {result_kp!r}"
        # A STAR answer is told in the first person, with the candidate's own task named.
        assert len(re.findall(r"\bI\b", q.reference)) >= 5, q.id
        assert re.search(r"\b(my task|my job|was mine|i was responsible)\b", q.reference.lower()), q.id


def test_key_points_appear_in_spirit_in_the_reference(sets: list[qmod.QuestionSet]) -> None:
    """A strong answer (the reference) mentions content words from every key point."""
    stop = {"a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "be", "that"}
    for s in sets:
        for q in s.questions:
            ref = set(re.findall(r"[a-z0-9]+", q.reference.lower()))
            for kp in q.key_points:
                content = [w for w in re.findall(r"[a-z0-9]+", kp.lower()) if w not in stop]
                shared = [w for w in content if w in ref or w.rstrip("s") in ref or f"{w}s" in ref]
                assert shared, f"{s.id}:{q.id}: key point {kp!r} shares no word with the reference"


def test_builtin_sets_are_cached_copies(sets: list[qmod.QuestionSet]) -> None:
    again = load_builtin_sets()
    assert again == sets and again is not sets
    again.clear()
    assert load_builtin_sets() == sets


# --- loader errors name the file and the field -----------------------------------------------


def _copy_set(tmp_path: Path, name: str = "data_science") -> tuple[Path, dict]:
    shutil.copy(qmod.SETS_DIR / f"{name}.json", tmp_path / f"{name}.json")
    return tmp_path / f"{name}.json", json.loads((qmod.SETS_DIR / f"{name}.json").read_text())


def _expect_error(tmp_path: Path, path: Path, data: object, *fragments: str) -> None:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    with pytest.raises(QuestionSetError) as err:
        load_builtin_sets(tmp_path)
    for fragment in (path.name, *fragments):
        assert fragment in str(err.value), str(err.value)


def test_loader_reports_missing_field(tmp_path: Path) -> None:
    path, data = _copy_set(tmp_path)
    del data["questions"][2]["key_points"]
    _expect_error(tmp_path, path, data, "questions[2]", "'ab-test-design'", "'key_points' is missing")


def test_loader_reports_empty_and_wrong_fields(tmp_path: Path) -> None:
    path, data = _copy_set(tmp_path)
    data["title"] = "  "
    _expect_error(tmp_path, path, data, "'title' must be non-empty text")
    path, data = _copy_set(tmp_path)
    data["questions"][0]["key_points"] = []
    _expect_error(tmp_path, path, data, "questions[0]", "'key_points'")
    path, data = _copy_set(tmp_path)
    data["questions"][1]["seconds"] = "90"
    _expect_error(tmp_path, path, data, "questions[1]", "'seconds'")
    path, data = _copy_set(tmp_path)
    data["questions"][1]["type"] = "trivia"
    _expect_error(tmp_path, path, data, "'type' is 'trivia'")
    path, data = _copy_set(tmp_path)
    data["questions"][3]["refrence"] = data["questions"][3].pop("reference")
    _expect_error(tmp_path, path, data, "questions[3]", "unknown field 'refrence'")
    path, data = _copy_set(tmp_path)
    data["questions"][0]["reference"] = "Use <b>precision</b>\x07 and recall."
    _expect_error(tmp_path, path, data, "'reference' contains markup")
    path, data = _copy_set(tmp_path)
    data["questions"] = []
    _expect_error(tmp_path, path, data, "'questions' must be a non-empty list")


def test_loader_reports_duplicate_and_bad_ids(tmp_path: Path) -> None:
    path, data = _copy_set(tmp_path)
    data["questions"][4]["id"] = data["questions"][0]["id"]
    _expect_error(tmp_path, path, data, "question id 'bias-variance' appears more than once")
    path, data = _copy_set(tmp_path)
    data["questions"][0]["id"] = "Bias Variance"
    _expect_error(tmp_path, path, data, "field 'id' is 'Bias Variance'")
    path, data = _copy_set(tmp_path)
    data["id"] = "other"
    _expect_error(tmp_path, path, data, "must match the file name 'data_science'")


def test_loader_reports_bad_json_and_empty_folder(tmp_path: Path) -> None:
    path, _ = _copy_set(tmp_path)
    _expect_error(tmp_path, path, '{"id": "data_science",', "not valid JSON")
    _expect_error(tmp_path, path, "[1, 2]", "must be a JSON object")
    path.unlink()
    with pytest.raises(QuestionSetError, match="no question set files"):
        load_builtin_sets(tmp_path)


# --- custom questions ------------------------------------------------------------------------


def test_custom_question_plain() -> None:
    q = custom_question(
        "  Why do you want this job?  ",
        "Because I like the product.",
        ["I use the product", "", "i use the product", "  the team  "],
    )
    assert q.question == "Why do you want this job?"
    assert q.key_points == ("I use the product", "the team")  # blanks and repeats dropped
    assert q.type == "custom" and q.seconds == qmod.DEFAULT_SECONDS
    assert q.id.startswith("custom-")
    assert (
        custom_question("Why do you want this job?", "Because I like the product.", q.key_points).id == q.id
    )
    assert custom_question("What is C#?", "", "a\nb\n\nc").key_points == ("a", "b", "c")


def test_custom_question_strips_control_characters() -> None:
    q = custom_question(
        "Tell\x00 me\x1b[31m about\u200b\ud800 yourself\r\n\t?", "ref\x07erence", ["one\x0btwo"]
    )
    for text in (q.question, q.reference, *q.key_points):
        assert all(ch.isprintable() for ch in text), text
    assert q.question == "Tell me [31m about yourself ?"
    assert q.reference == "ref erence" and q.key_points == ("one two",)


def test_custom_question_caps_a_megabyte() -> None:
    big = "word " * 200_000  # 1 MB
    q = custom_question(big, big, [big] * 50)
    assert len(q.question) <= MAX_QUESTION_CHARS
    assert len(q.reference) <= MAX_REFERENCE_CHARS
    assert len(q.key_points) == 1  # fifty identical points collapse to one
    assert len(q.key_points[0]) <= MAX_KEY_POINT_CHARS
    many = custom_question("Q?", "", [f"point {i}" for i in range(1000)])
    assert len(many.key_points) == MAX_KEY_POINTS
    assert len(custom_question("x" * 1_000_000, "", []).question) == MAX_QUESTION_CHARS


def test_custom_question_strips_html() -> None:
    q = custom_question(
        '<script>alert("x")</script><b>Describe</b> a <a href="javascript:alert(1)">project</a><img src=x onerror=alert(1)>',
        "&lt;iframe src=//evil&gt;Good [answer](javascript:alert(1)) ![p](http://evil/p.png)",
        ["<style>body{display:none}</style>teamwork"],
    )
    assert q.question == "Describe a project"
    assert q.reference == "Good answer p"
    assert q.key_points == ("teamwork",)
    for text in (q.question, q.reference, *q.key_points):
        assert "<" not in text and "javascript" not in text and "alert" not in text


def test_custom_question_keeps_operator_looking_text_as_text(db: Database) -> None:
    """'$where' typed as text stays literal text; stored, it is a value and never a filter."""
    q = custom_question("$where: function() { return true }", "{'$gt': ''}", ['{"$ne": null}', "$regex"])
    assert q.question == "$where: function() { return true }"
    assert q.reference == "{'$gt': ''}"
    assert q.key_points == ('{"$ne": null}', "$regex")
    custom_set = qmod.QuestionSet("custom", "Custom", "custom", "typed by a user", (q,))
    sync_to_db(db, [custom_set])
    [doc] = list(db.questions.find({"set_id": "custom"}))
    assert doc["question"] == q.question and doc["reference"] == q.reference
    assert db.questions.count_documents({"reference": "{'$gt': ''}"}) == 1
    assert sets_from_db(db) == [custom_set]


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "question is empty"),
        ("   \n\t ", "question is empty"),
        ("\x00\x01\x02", "question is empty"),
        ("<b></b><script>x</script>", "question is empty"),
        (None, "question is empty"),
        ({"$gt": ""}, "question must be text, not dict"),
        (["$where"], "question must be text, not list"),
        (42, "question must be text, not int"),
    ],
)
def test_custom_question_refuses_empty_or_non_text(question: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        custom_question(question, "reference", [])


def test_custom_question_refuses_non_text_parts() -> None:
    with pytest.raises(ValueError, match="reference must be text, not dict"):
        custom_question("Q?", {"$where": "1"}, [])
    with pytest.raises(ValueError, match="key point 2 must be text, not dict"):
        custom_question("Q?", "", ["ok", {"$gt": ""}])
    with pytest.raises(ValueError, match="key points must be a list"):
        custom_question("Q?", "", {"$gt": ""})
    with pytest.raises(ValueError, match="seconds must be a number"):
        custom_question("Q?", "", [], seconds="{'$gt': ''}")
    assert custom_question("Q?", "", [], seconds=10**9).seconds == qmod.MAX_SECONDS
    assert custom_question("Q?", "", [], seconds=-5).seconds == qmod.MIN_SECONDS


# --- database copy ---------------------------------------------------------------------------


def test_sync_is_idempotent_and_reads_back_equal(db: Database, sets: list[qmod.QuestionSet]) -> None:
    ensure_indexes(db)
    total = sum(len(s.questions) for s in sets)
    assert sync_to_db(db) == total
    assert db.questions.count_documents({}) == total
    first = sorted(db.questions.find({}), key=lambda d: d["_id"])
    assert sync_to_db(db) == total
    assert db.questions.count_documents({}) == total
    assert sorted(db.questions.find({}), key=lambda d: d["_id"]) == first
    assert sets_from_db(db) == sets
    assert sets_from_db(db, ["product_management"]) == [s for s in sets if s.id == "product_management"]
    assert sets_from_db(db, []) == []


def test_stored_document_shape(db: Database, sets: list[qmod.QuestionSet]) -> None:
    sync_to_db(db)
    doc = db.questions.find_one({"_id": "behavioural:conflict"})
    assert doc is not None
    behavioural = next(s for s in sets if s.id == "behavioural")
    q = behavioural.question("conflict")
    assert doc == {
        "_id": "behavioural:conflict",
        "set_id": "behavioural",
        "order": 0,
        "set_title": behavioural.title,
        "set_description": behavioural.description,
        "role": behavioural.role,
        "question": q.question,
        "reference": q.reference,
        "key_points": list(q.key_points),
        "type": "behavioural",
        "seconds": q.seconds,
    }
    orders = [d["order"] for d in db.questions.find({"set_id": "data_science"}).sort("order", 1)]
    assert orders == list(range(len(next(s for s in sets if s.id == "data_science").questions)))
    assert "by_set" in db.questions.index_information()
    # sets_from_db's query is served by that index, not a collection scan.
    plan = (
        db.questions.find({"set_id": {"$in": ["data_science"]}}).sort([("set_id", 1), ("order", 1)]).explain()
    )
    assert "by_set" in json.dumps(plan, default=str) and "COLLSCAN" not in json.dumps(plan, default=str)


def test_sync_replaces_edited_and_removes_dropped_questions(
    db: Database, sets: list[qmod.QuestionSet]
) -> None:
    sync_to_db(db)
    ds = next(s for s in sets if s.id == "data_science")
    edited_q = qmod.Question(**{**ds.questions[0].__dict__, "question": "Edited?"})
    edited = qmod.QuestionSet(ds.id, "New title", ds.role, ds.description, (edited_q, *ds.questions[1:3]))
    assert sync_to_db(db, [edited]) == 3
    assert db.questions.count_documents({"set_id": "data_science"}) == 3
    assert sets_from_db(db, ["data_science"]) == [edited]
    # Other sets are untouched by a partial sync.
    assert db.questions.count_documents({}) == sum(len(s.questions) for s in sets) - len(ds.questions) + 3


def test_sets_from_db_skips_malformed_documents(
    db: Database, sets: list[qmod.QuestionSet], caplog: pytest.LogCaptureFixture
) -> None:
    sync_to_db(db)
    db.questions.insert_one(
        {"_id": "behavioural:zz-bad", "set_id": "behavioural", "order": 99, "question": 5}
    )
    db.questions.insert_one({"_id": "no-colon", "set_id": "other", "order": 0})
    with caplog.at_level("WARNING", logger="pipeline.questions"):
        assert sets_from_db(db) == sets
    assert "'behavioural:zz-bad'" in caplog.text and "'no-colon'" in caplog.text


# --- the shipped grader can use the key points ---------------------------------------------


@pytest.mark.slow
def test_grader_finds_every_key_point_in_its_model_answer(sets: list[qmod.QuestionSet]) -> None:
    """Spoken as written, each reference covers all its key points and grades strong; the
    next question's reference, given as the answer, covers few and grades lower."""
    from pipeline.encoder import SentenceEncoder
    from pipeline.grading import GradeOptions, grade, texts_to_encode

    encoder, options = SentenceEncoder(), GradeOptions()
    # One batched encode up front; grade() then reads the encoder's cache.
    encoder.encode(
        sorted(
            {
                t
                for s in sets
                for q in s.questions
                for t in texts_to_encode(q.question, q.reference, list(q.key_points), q.reference)
            }
        )
    )
    for s in sets:
        for i, q in enumerate(s.questions):
            own, f = grade(encoder, q.question, q.reference, list(q.key_points), q.reference, options=options)
            sims = [round(e.best_similarity or 0.0, 2) for e in f.key_points]
            assert own.coverage == 1.0 and own.band == "strong", f"{s.id}:{q.id}: {sims}"
            other = s.questions[(i + 1) % len(s.questions)].reference
            off, _ = grade(encoder, q.question, q.reference, list(q.key_points), other, options=options)
            assert off.coverage is not None and off.coverage <= 0.4, f"{s.id}:{q.id} matched another answer"
            assert off.score is not None and own.score is not None and off.score < own.score
