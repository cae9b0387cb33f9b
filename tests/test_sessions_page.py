"""Sessions list: filters, sort, search, pagination and access, in the queries and on the page (AppTest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from pipeline import auth
from pipeline.queries import (
    SessionFilters,
    and_filters,
    answer_counts,
    list_session_page,
    list_sessions,
    search_pattern,
    session_filter_options,
    session_sort,
    sessions_query,
)
from pipeline.safe_text import md
from pipeline.settings import Settings
from pipeline.storage import ensure_indexes
from tests.pages_support import open_page, page_database

NOW = datetime.now(UTC).replace(microsecond=0)
NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Barbara Liskov", "Edsger Dijkstra"]
ROLES = ["backend", "frontend", "data"]
HOSTILE = ['{"$gt": ""}', ".*", "^(a+)+$", "$where", "a|b", "(", "\\", "[a-z]"]


def make_sessions(n: int = 120) -> list[dict[str, Any]]:
    """Sessions from ~2 years ago to one in the future; every 9th ungraded; a few share a start time."""
    docs = []
    for i in range(n):
        grade = None if i % 9 == 4 else round((i * 37 % 100) / 100, 2)
        band = None if grade is None else ("weak" if grade < 0.4 else "fair" if grade < 0.6
                                           else "good" if grade < 0.8 else "strong")
        started = NOW - timedelta(days=6 * (i - 1 if i % 10 == 0 and i else i))  # s-010 = s-009: ties
        docs.append({
            "_id": f"s-{i:03d}", "candidate": NAMES[i % len(NAMES)], "role": ROLES[i % len(ROLES)],
            "candidate_user": NAMES[i % len(NAMES)].split()[0].lower(), "coach": "coach1" if i % 2 else "coach2",
            "started_at": started, "status": "complete", "grade": grade, "band": band,
            "flags": ["too_short"] if i % 7 == 0 else [], "settings": {"emotion_enabled": True},
        })
    docs.append({"_id": "s-future", "candidate": "Zed Future", "role": "backend", "started_at": NOW + timedelta(days=2),
                 "status": "recording", "grade": None, "band": None, "flags": []})
    docs.append({"_id": "s-literal", "candidate": ".* literal", "role": "{\"$gt\": \"\"} role",
                 "started_at": NOW - timedelta(days=1000), "status": "complete", "grade": 0.5, "band": "fair",
                 "flags": []})
    return docs


@pytest.fixture
def list_db(db):
    ensure_indexes(db)
    db.sessions.insert_many(make_sessions())
    db.answers.insert_many([{"_id": f"a-{i}-{k}", "session_id": f"s-{i:03d}", "index": k}
                            for i in range(0, 30) for k in range(i % 4)])
    return db


def _naive(db, filters: SessionFilters | None, sort: str, descending: bool, page: int, access=None) -> list[str]:
    """The same page read the plain way: whole query, sort, skip, limit."""
    cur = db.sessions.find(sessions_query(filters, access), {"_id": 1}).sort(session_sort(sort, descending))
    return [d["_id"] for d in cur.skip(page * 50).limit(50)]


# --------------------------------------------------------------------------- queries


def test_search_pattern_is_escaped_and_anchored():
    for text in HOSTILE:
        pattern = search_pattern(text)
        assert pattern is not None and pattern.startswith(r"(?:^|\s)")
        import re

        assert re.search(pattern, text, re.IGNORECASE)  # matches itself, literally
        assert not re.search(pattern, "zzz", re.IGNORECASE)
    assert search_pattern("   ") is None and search_pattern(None) is None
    assert len(search_pattern("x" * 10_000)) < 200  # capped


def test_filter_values_never_become_operators():
    q = sessions_query(SessionFilters(candidate={"$gt": ""}, role=["x"], band={"$ne": None}))  # type: ignore[arg-type]
    assert q == {"candidate": "{'$gt': ''}", "role": "['x']", "band": "{'$ne': None}"}
    assert sessions_query(SessionFilters(band="ungraded")) == {"band": None}


def test_and_filters_merges_or_wraps_and_never_widens_access():
    assert and_filters(None, {}) == {}
    assert and_filters({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    access = {"$or": [{"coach": "c"}, {"candidate_user": {"$in": ["x"]}}]}
    search = sessions_query(SessionFilters(search="ada"), access)
    assert search["$and"][0] == access and "$or" in search["$and"][1]  # two $or: both must hold
    assert and_filters({"candidate": "x"}, {"candidate": "y"}) == {"$and": [{"candidate": "x"}, {"candidate": "y"}]}


@pytest.mark.parametrize(("sort", "descending"), [("date", True), ("date", False), ("grade", True), ("grade", False),
                                                  ("candidate", True), ("candidate", False)])
def test_every_sort_and_page_equals_the_plain_query(list_db, sort, descending):
    for page in range(3):
        got = list_session_page(list_db, sort=sort, descending=descending, page=page)
        assert [r["id"] for r in got.rows] == _naive(list_db, None, sort, descending, page), (sort, page)
        assert got.has_next == (page < 2)
    filtered = SessionFilters(role="backend")
    assert [r["id"] for r in list_session_page(list_db, filtered, sort=sort, descending=descending).rows] == \
        _naive(list_db, filtered, sort, descending, 0)


def test_page_rows_filters_and_answer_counts(list_db):
    page = list_session_page(list_db)
    assert len(page.rows) == 50 and page.has_next and page.first == 1
    assert page.rows[0]["id"] == "s-future"  # newest first, even a clock-skewed future one
    assert set(page.rows[0]) == {"id", "candidate", "role", "started_at", "status", "grade", "band", "flags",
                                 "answers"}
    counts = {r["id"]: r["answers"] for r in page.rows}
    assert counts["s-003"] == 3 and counts["s-004"] == 0 and counts["s-045"] == 0
    assert answer_counts(list_db, ["s-003", "s-005"]) == {"s-003": 3, "s-005": 1}
    good = list_session_page(list_db, SessionFilters(band="good"), page_size=500).rows
    assert good and all(r["band"] == "good" for r in good)
    ungraded = list_session_page(list_db, SessionFilters(band="ungraded"), page_size=500).rows
    assert {r["grade"] for r in ungraded} == {None}
    ada = list_session_page(list_db, SessionFilters(candidate="Ada Lovelace"), sort="grade").rows
    assert {r["candidate"] for r in ada} == {"Ada Lovelace"} and len(ada) == 24
    grades = [r["grade"] for r in ada if r["grade"] is not None]
    assert grades == sorted(grades, reverse=True)
    day = (NOW - timedelta(days=60)).date()
    ranged = list_session_page(list_db, SessionFilters(date_from=day, date_to=NOW.date())).rows
    assert ranged and all(day <= r["started_at"].date() <= NOW.date() for r in ranged)
    assert "s-future" not in {r["id"] for r in ranged}
    last = list_session_page(list_db, page=2)
    assert len(last.rows) == 22 and not last.has_next and last.first == 101


def test_search_is_a_case_insensitive_prefix_of_a_word(list_db):
    hop = list_session_page(list_db, SessionFilters(search="HOP"), page_size=500).rows
    assert hop and {r["candidate"] for r in hop} == {"Grace Hopper"}
    assert {r["role"] for r in list_session_page(list_db, SessionFilters(search="front"), page_size=500).rows} == \
        {"frontend"}
    assert not list_session_page(list_db, SessionFilters(search="opper")).rows  # not a word's start
    for text in HOSTILE:
        rows = list_session_page(list_db, SessionFilters(search=text), page_size=500).rows
        expected = {"s-literal"} if text in ('{"$gt": ""}', ".*") else set()
        assert {r["id"] for r in rows} == expected, text


def test_access_filter_applies_to_every_query(list_db):
    access = {"candidate_user": "ada"}
    rows = list_session_page(list_db, SessionFilters(search="g"), page_size=500, access=access).rows
    assert not rows  # Grace is not Ada's
    rows = list_session_page(list_db, page_size=500, access=access).rows
    assert len(rows) == 24 and {r["candidate"] for r in rows} == {"Ada Lovelace"}
    coach = {"$or": [{"coach": "coach1"}, {"candidate_user": {"$in": ["alan"]}}]}
    got = list_session_page(list_db, SessionFilters(band="good"), page_size=500, access=coach).rows
    expected = _naive(list_db, SessionFilters(band="good"), "date", True, 0, coach)
    assert [r["id"] for r in got] == expected and expected
    assert session_filter_options(list_db, access) == {"candidates": ["Ada Lovelace"], "roles": sorted(ROLES)}
    assert len(list_sessions(list_db, access=access)) == 24
    assert list_session_page(list_db, access=auth.NOTHING).rows == []


# --------------------------------------------------------------------------- the page


@pytest.fixture
def page_db(mongo_uri, tmp_path, monkeypatch):
    for db in page_database(mongo_uri, tmp_path, monkeypatch, "test_sessions_page"):
        db.sessions.insert_many(make_sessions())
        yield db


def _token(db, role: str = "admin", username: str = "admin", **kw: Any) -> str:
    user = auth.create_user(db, username, "a-long-password-1", role, **kw)
    return auth.start_login(db, user, Settings())


def _page(token: str) -> AppTest:
    return open_page("pages/sessions.py", token)


def _rows(at: AppTest):
    return at.dataframe[0].value


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_lists_filters_sorts_and_pages(page_db):
    at = _page(_token(page_db))
    df = _rows(at)
    assert len(df) == 50 and df["candidate"].iloc[0] == "Zed Future"
    assert df["report"].iloc[0] == "report?session=s-future"  # each row links to its report
    assert any("Page 1 · sessions 1–50" in c.value for c in at.caption)
    _ok(at.button(key="next").click().run())
    assert len(_rows(at)) == 50 and any("sessions 51–100" in c.value for c in at.caption)
    _ok(at.button(key="next").click().run())
    assert len(_rows(at)) == 22 and at.button(key="next").disabled
    _ok(at.button(key="prev").click().run())
    assert any("sessions 51–100" in c.value for c in at.caption)
    # A filter goes back to page 1.
    _ok(at.selectbox(key="band").select("good").run())
    df = _rows(at)
    assert set(df["band"]) == {"good"} and any("Page 1 ·" in c.value for c in at.caption)
    _ok(at.selectbox(key="band").select("All").run())
    _ok(at.selectbox(key="candidate").select("Grace Hopper").run())
    assert set(_rows(at)["candidate"]) == {"Grace Hopper"} and len(_rows(at)) == 24
    _ok(at.selectbox(key="sort").select("grade").run())
    grades = [g for g in _rows(at)["grade"] if g == g and g is not None]
    assert grades == sorted(grades, reverse=True)
    _ok(at.selectbox(key="candidate").select("All").run())
    _ok(at.selectbox(key="sort").select("candidate").run())
    names = list(_rows(at)["candidate"])
    assert names == sorted(names) and names[0] == ".* literal"
    _ok(at.selectbox(key="role").select("data").run())
    assert set(_rows(at)["role"]) == {"data"}


def test_page_search_treats_hostile_input_as_plain_text(page_db):
    at = _page(_token(page_db))
    _ok(at.text_input(key="search").input("hop").run())
    assert set(_rows(at)["candidate"]) == {"Grace Hopper"}
    for text in HOSTILE:
        _ok(at.text_input(key="search").input(text).run())
        if text in ('{"$gt": ""}', ".*"):
            assert list(_rows(at)["candidate"]) == [".* literal"], text
        else:
            assert not at.dataframe or at.dataframe[0].value.empty or \
                "Ada Lovelace" not in set(_rows(at)["candidate"]), text
            assert any("No sessions match" in i.value for i in at.info), text


def test_page_respects_the_signed_in_candidate(page_db):
    _token(page_db, "coach", "coach1")
    token = _token(page_db, "candidate", "ada", coach="coach1")
    at = _page(token)
    assert set(_rows(at)["candidate"]) == {"Ada Lovelace"}
    assert at.selectbox(key="candidate").options == ["All", "Ada Lovelace"]


def test_page_delete_needs_confirmation_and_removes_the_session(page_db):
    page_db.answers.insert_one({"_id": "a-x", "session_id": "s-future", "index": 0})
    at = _page(_token(page_db))
    at.selectbox(key="delete_target").select("s-future").run()
    assert at.button(key="delete_button").disabled  # not without the confirmation
    _ok(at.checkbox(key="delete_sure").check().run())
    _ok(at.button(key="delete_button").click().run())
    assert any(f"Deleted session {md('s-future')}" in s.value for s in at.success)
    assert page_db.sessions.find_one({"_id": "s-future"}) is None
    assert "Zed Future" not in set(_rows(at)["candidate"])  # the list no longer shows it
    assert page_db.answers.count_documents({"session_id": "s-future"}) == 0


def test_page_progress_and_compare_tabs(page_db):
    page_db.answers.insert_many([
        {"_id": f"a-{i}", "session_id": f"s-00{i}", "index": 0, "grade": {"score": 0.5 + i / 20},
         "metrics": {"wpm": 120 + i, "fillers_per_minute": 1.0 * i, "filler_count": i}} for i in range(1, 6)])
    at = _page(_token(page_db))
    _ok(at.selectbox(key="progress_candidate").select("Grace Hopper").run())
    charts = at.get("plotly_chart")
    assert len(charts) == 4 + 1  # four progress charts, plus the comparison chart
    _ok(at.toggle(key="progress_by_type").set_value(True).run())
    table = at.dataframe[1].value  # the comparison table
    assert "Grade" in set(table["metric"]) and "Pace (words per minute)" in set(table["metric"])
