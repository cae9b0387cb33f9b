"""Issue 9, items 6 and 7: markdown/HTML injection through user-derived strings, CSV formula injection.

Item 6 is checked three ways:
- the escaper (pipeline.safe_text.md) on its own: its output, rendered by a CommonMark renderer
  (markdown-it-py) and then put through the text rewrites that Streamlit's renderer applies after
  parsing (GFM autolink literals, emoji shortcodes, icons, typographic arrows; the regexes are
  copied from, and checked against, the Streamlit bundle installed here), has no link or image
  and shows exactly the input;
- the question cleaner (pipeline.questions.custom_question) strips every form of markdown link;
- the real app (AppTest of app.py against the real database): hostile names, questions, flags,
  profile names and session ids come out escaped on the report, sessions and research pages, and
  as plain text in the report's Plotly figure.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import unicodedata
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import streamlit
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from pipeline import auth
from pipeline.export import load_session, samples_csv
from pipeline.progress import progress_figure
from pipeline.questions import custom_question
from pipeline.report import ReportOptions
from pipeline.safe_text import WORD_JOINER, md, plain_html
from pipeline.settings import get_settings
from pipeline.storage import ensure_indexes
from pipeline.timeline import answer_timeline
from tests.pages_support import APP, admin_token, open_page, page_database
from tests.test_report import make_answer, make_frames

pytestmark = pytest.mark.security

EVIL = "http://evil.example"
HOSTILE_NAME = f"[click]({EVIL}/x) ![img]({EVIL}/i.png) <img src=x onerror=alert(1)> {EVIL}"
HOSTILE_QUESTION = f'![i]({EVIL}/q.png "t") [go]( {EVIL}/go ) What did you build?'
HOSTILE_ID = f"[id]({EVIL}/id) ![i]({EVIL}/i.png) <img src=x onerror=alert(1)>"

# ----------------------------------------------------------------------------- the renderer model

# Rewrites Streamlit's markdown renderer applies to *text* after parsing, where backslash
# escapes are already resolved (so escaping alone cannot stop them). JS regex literal as it
# appears in the installed bundle -> the same pattern in Python (\w is ASCII in JS: re.ASCII).
# The e-mail pattern drops the JS look-behind: matching more is the stricter check.
TEXT_REWRITES: dict[str, tuple[str, re.Pattern[str]]] = {
    "GFM autolink literal (URL)": (r"/(https?:\/\/|www(?=\.))([-.\w]+)([^ \t\r\n]*)/gi",
                                   re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I | re.A)),
    "GFM autolink literal (e-mail)": (r"/(?<=^|\s|\p{P}|\p{S})([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)/gu",
                                      re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.A)),
    "remark-emoji shortcode": (r"/:\+1:|:-1:|:[\w-]+:/g", re.compile(r":\+1:|:-1:|:[\w-]+:", re.A)),
    "Streamlit material icon": (r"/:material_(\w+):/g", re.compile(r":material_(\w+):", re.A)),
    "Streamlit logo": (r"/:streamlit:/g", re.compile(r":streamlit:")),
    **{f"Streamlit typography {t}": (f"/(^|\\s){t}(\\s|$)/g", re.compile(rf"(^|\s){re.escape(t)}(\s|$)"))
       for t in ("<->", "->", "<-", "--", ">=", "<=", "~=")},
}
# Streamlit rewrites the markdown *source* too: ':material/' becomes ':material_' before parsing,
# and the emoji plugin is loaded only when this matches the source.
SOURCE_EMOJI_GATE = (r"/:(?!material\/|streamlit:)[\w+-][\w_+-]*:/",
                     re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:", re.A))

_RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def render(source: str) -> tuple[list[str], str]:
    """The tags and the visible text (word joiners kept) of ``source`` rendered as markdown."""
    parser = _Html()
    parser.feed(_RENDERER.render(source))
    parser.close()
    return parser.tags, "".join(parser.text).strip()


def active_markup(source: str) -> list[str]:
    """What in ``source`` Streamlit would turn into something other than text (empty: nothing)."""
    tags, text = render(source)
    found = [f"<{t}>" for t in tags if t in ("a", "img", "script", "iframe", "svg", "math")]
    found += [name for name, (_, rx) in TEXT_REWRITES.items() if rx.search(text)]
    if ":material/" in source or SOURCE_EMOJI_GATE[1].search(source):
        found.append("source-level icon or emoji")
    return found


def expected_text(value: str) -> str:
    """What a reader must see for ``value``: the same characters, whitespace runs as one space."""
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in value).split())


def visible(source: str) -> str:
    return render(source)[1].replace(WORD_JOINER, "")


# ----------------------------------------------------------------------------- the escaper

HOSTILE_STRINGS = [
    HOSTILE_NAME, HOSTILE_QUESTION, HOSTILE_ID,
    "# heading", "## two", "- item", "+ item", "* item", "1. item", "1) item", "> quote", "    indented code",
    "***", "---", "___", "a\n===", "b\n---", "| a | b |\n|---|---|\n| c | d |", "~~strike~~ ~one~",
    "`code` ``two``", "```py\nfenced\n```", "**bold** __bold__ _it_ *it*", "$x^2$ and $$y$$", r"\(x\) \[y\]",
    ":smile: :+1: :-1: :material/home: :material_home: :streamlit:", ":red[red] :blue-background[x] :rainbow[r]",
    ":help[tip] :small[s] :shimmer[x]", f"www.evil.example WWW.EVIL.EXAMPLE {EVIL}/a?b=1#c https://evil.example",
    "mailto:a@evil.example b@evil.example c+d@e.co", f"<{EVIL}> <a@evil.example>", "<script>alert(1)</script>",
    "<!-- hidden -->", "&lt;b&gt; &amp; &#60; &copy;", f"[x][ref] [y][] [ref]\n\n[ref]: {EVIL} \"t\"",
    f"footnote[^1]\n\n[^1]: {EVIL}", "a -> b <- c <-> d -- e >= f <= g ~= h", "back\\slash \\* \\[ \\",
    "line one  \nline two\\\nthree", "tab\there\r\nthere", "nul\x00 bell\x07 esc\x1b[31m", "![", "](", "[](", "!",
    "Zoë Ångström 中文 😀 émoji", "1\\. not a list", "<b onmouseover=alert(1)>x</b>", "javascript:alert(1)",
    f"[a [nested] b]({EVIL})", f"[![img]({EVIL}/i.png)]({EVIL})", "12:30 and a:b:c", "  leading and trailing  ",
]


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_escaped_text_renders_as_the_literal_input(value):
    source = md(value)
    assert "\n" not in source  # one line: nothing can start a block
    assert active_markup(source) == [], source
    tags, _ = render(source)
    assert set(tags) <= {"p"}, (tags, source)
    assert visible(source) == expected_text(value)


def test_escaped_text_survives_random_markdown_soup():
    rng = random.Random(9)  # deterministic: a failure reproduces
    alphabet = list("\\`*_{}[]()#+-.!|<>~=$:@&;/\"' \n\tabcwhtp0123") + ["www.", "http://", ":material/", "](", "![",
                                                                       "<img ", "e@x.co", "->", "--"]
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        source = md(value)
        assert active_markup(source) == [], (value, source)
        assert visible(source) == expected_text(value), (value, source)


def test_escaper_breaks_bare_urls_and_keeps_plain_text():
    assert md("Ada Lovelace") == "Ada Lovelace"  # nothing to escape: unchanged
    assert md(None) == "" and md(42) == "42"
    out = md(f"see {EVIL}/x and www.evil.example")
    assert EVIL not in out and "www." not in out
    _, text = render(out)
    assert "http://" not in text and "www." not in text  # broken by an invisible word joiner
    assert text.replace(WORD_JOINER, "") == f"see {EVIL}/x and www.evil.example"


def test_renderer_model_matches_the_installed_streamlit_bundle():
    """The rewrites modelled above are the ones the installed Streamlit frontend ships."""
    js = Path(streamlit.__file__).parent / "static" / "static" / "js"
    markdown_js = "".join(p.read_text(encoding="utf-8") for p in js.glob("StreamlitMarkdown*.js"))
    emoji_js = "".join(p.read_text(encoding="utf-8") for p in js.glob("remark-emoji*.js"))
    assert markdown_js and emoji_js, f"Streamlit {streamlit.__version__}: markdown bundle not found in {js}"
    for name, (literal, _) in TEXT_REWRITES.items():
        if name.startswith("Streamlit typography"):
            literal = literal.replace("/(^|\\s)", "[/(^|\\s)", 1)[1:]  # written as an array entry there
        assert literal in (emoji_js if "emoji" in name else markdown_js), name
    assert SOURCE_EMOJI_GATE[0] in markdown_js
    assert "replaceAll(`:material/`,`:material_`)" in markdown_js


def test_plotly_text_is_escaped():
    assert plain_html('<a href="http://evil">x</a> & <b>') == '&lt;a href="http://evil"&gt;x&lt;/a&gt; &amp; &lt;b&gt;'
    fig = progress_figure([{"started_at": datetime(2026, 1, 1, tzinfo=UTC), "grade": 0.5, "answers": 1,
                            "role": "<a href='http://evil'>r</a>", "type": "<b>t</b>"}], "grade", by="type")
    trace = fig.data[0]
    assert trace.name == "&lt;b&gt;t&lt;/b&gt;" and trace.customdata[0][0] == "&lt;a href='http://evil'&gt;r&lt;/a&gt;"


def test_report_figure_shows_words_fillers_and_key_points_as_text():
    answer = make_answer()
    answer["words"][0]["word"] = "<b>um</b>"
    answer["metrics"]["fillers"][0]["phrase"] = "<b>um</b>"
    answer["grade"]["matched"][0]["key_point"] = "<a href='http://evil'>kp</a>"
    answer["grade"]["matched"][0]["span"] = "<img src=x onerror=alert(1)>"
    fig = answer_timeline(answer, make_frames(), ReportOptions.from_settings(get_settings()))
    dumped = fig.to_json()
    assert "<b>um" not in dumped and "<a href" not in dumped and "<img" not in dumped
    words = next(t for t in fig.data if t.name == "words")
    assert "&lt;b&gt;um&lt;/b&gt;" in list(words.text)
    covered = next(t for t in fig.data if t.name == "key points covered")
    assert list(covered.customdata[0][:2]) == ["&lt;a href='http://evil'&gt;kp&lt;/a&gt;", "&lt;img src=x onerror=alert(1)&gt;"]


# ----------------------------------------------------------------------------- the question cleaner

@pytest.mark.parametrize("question", [
    f'![i]({EVIL}/i.png "t") What?', f"[go]( {EVIL} ) What?", f"[go](<{EVIL}>) What?",
    f"[go]({EVIL} 'title') What?", f"[go]({EVIL} (title)) What?", "[x](javascript:alert(1)) What?",
    f"[x][ref] What?\n\n[ref]: {EVIL}", f"[x][] What?\n[x]: {EVIL} \"t\"", f"[![img]({EVIL}/i.png)]({EVIL}) What?",
    f"[a [nested] b]({EVIL}) What?", f"<a href='{EVIL}'>go</a> What?", f"<img src={EVIL}/i.png> What?",
    f"<{EVIL}> What?", "&lt;img src=x onerror=alert(1)&gt; What?",
])
def test_custom_question_cleaner_strips_links_images_and_html(question):
    q = custom_question(question, f"[ref]({EVIL}) answer", [f"![kp]({EVIL}/k.png) point", "plain point"])
    for text in (q.question, q.reference, *q.key_points):
        assert "](" not in text and "![" not in text and "<" not in text and "]: " not in text, text
        assert "evil.example" not in text or text.count("[") == 0, text
    assert q.question.endswith("What?") and q.reference.endswith("answer") and q.key_points[1] == "plain point"


def test_custom_question_keeps_plain_brackets_and_urls_as_text():
    q = custom_question("Compare a[i] with b(j): see https://example.org", "", [])
    assert q.question == "Compare a[i] with b(j): see https://example.org"
    assert active_markup(md(q.question)) == []  # rendered escaped on the interview and report pages


# ----------------------------------------------------------------------------- the real app

@pytest.fixture
def app_db(mongo_uri, tmp_path, monkeypatch):
    yield from page_database(mongo_uri, tmp_path, monkeypatch, "test_injection")


def markdown_sources(at: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as markdown."""
    out: list[str] = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(m.label) for m in at.metric] + [str(m.value) for m in at.metric]
    out += [str(e.label) for e in at.expander]
    return out


def assert_shown_as_text(at: AppTest, *values: str) -> None:
    """No page string renders a link, image or icon; each of ``values`` is shown, escaped, somewhere."""
    assert not at.exception, [e.value for e in at.exception]
    sources = markdown_sources(at)
    for source in sources:
        assert "<img" not in source and "<a " not in source, source
        assert "](" not in source and "![" not in source, source  # escaped: \]\( and \!\[
        found = [f for f in active_markup(source) if not f.startswith(("Streamlit material", "source-level"))]
        assert found == [], (found, source)
        assert EVIL not in source, source
    for value in values:
        shown = [s for s in sources if md(value) in s]
        assert shown, f"{value!r} is not on the page escaped; page strings: {sources}"
        assert all(expected_text(value) in visible(s) for s in shown)


def _token(db: Any, username: str, role: str) -> str:
    user = auth.get_user(db, username) or auth.create_user(db, username, "test-pass-123", role)
    return auth.start_login(db, user, get_settings())


def test_report_page_shows_hostile_names_questions_and_flags_as_text(app_db):
    key_point = f"[kp]({EVIL}/k) <a href='{EVIL}/k'>k</a>"
    app_db.sessions.insert_one({
        "_id": "s-evil", "candidate": HOSTILE_NAME, "role": f"[role]({EVIL}/r)", "status": "complete",
        "started_at": datetime.now(UTC), "grade": 0.64, "band": "good", "settings": {"emotion_enabled": True},
        "flags": [f"![f]({EVIL}/f.png)"], "profile": {"name": f"[p]({EVIL}/p) :material/home:", "version": 1},
    })
    answer = make_answer("a-evil", "s-evil", question=HOSTILE_QUESTION,
                         transcript=f"see {EVIL}/t and [t]({EVIL}/t) :material/home: a@evil.example")
    answer["words"][3]["word"] = f"<a href='{EVIL}/w'>w</a>"
    answer["grade"]["missed"][0]["key_point"] = key_point
    answer["features"]["key_points"][0]["key_point"] = key_point
    app_db.answers.insert_one(answer)
    app_db.frames.insert_many(make_frames(answer_id="a-evil", session_id="s-evil"))

    at = open_page("pages/report.py", admin_token(), session="s-evil")
    assert_shown_as_text(at, HOSTILE_NAME, HOSTILE_QUESTION, f"[role]({EVIL}/r)", f"![f]({EVIL}/f.png)",
                         f"[p]({EVIL}/p) :material/home:")
    assert any(md(answer["transcript"]) == m.value for m in at.markdown)
    advice = "\n".join(m.value for m in at.markdown if "Advice" in m.value)
    assert f"missed: '[kp]({EVIL}/k) <a href=" in visible(advice)  # quoted in the advice, as text

    # The figure: Plotly applies <a>, <b>, <br> in text, so user text reaches it HTML-escaped.
    spec = json.dumps(json.loads(at.get("plotly_chart")[0].proto.spec))
    assert "<a href" not in spec and "&lt;a href='http://evil.example/w'&gt;w&lt;/a&gt;" in spec
    assert "&lt;a href='http://evil.example/k'&gt;k&lt;/a&gt;" in spec


@pytest.mark.parametrize("requested", [HOSTILE_NAME, "<img src=x onerror=alert(1)>", f":red[x] {EVIL} $x$ #h"])
def test_report_url_with_a_hostile_session_id_is_reflected_escaped(app_db, requested):
    at = open_page("pages/report.py", admin_token(), session=requested)
    errors = [e.value for e in at.error]
    assert any(f"No session with id {md(repr(requested))}" in e for e in errors), errors
    assert_shown_as_text(at, repr(requested))


def test_not_allowed_message_shows_the_session_id_escaped(app_db):
    app_db.sessions.insert_one({"_id": HOSTILE_ID, "candidate": "Someone", "coach": "coach2",
                                "started_at": datetime.now(UTC), "status": "complete"})
    at = open_page("pages/report.py", _token(app_db, "coach1", "coach"), session=HOSTILE_ID)
    assert any(f"not allowed to see session {md(repr(HOSTILE_ID))}" in e.value for e in at.error)
    assert_shown_as_text(at, repr(HOSTILE_ID))


def test_sessions_page_progress_message_shows_a_vanished_candidate_escaped(app_db, mongo_uri):
    app_db.sessions.insert_one({"_id": "s-evil", "candidate": HOSTILE_NAME, "role": "backend",
                                "started_at": datetime.now(UTC), "status": "complete", "grade": 0.5, "band": "fair"})
    at = open_page("pages/sessions.py", admin_token())
    assert HOSTILE_NAME in at.dataframe[0].value.to_string(index=False, max_colwidth=500)  # plain text there
    # Deleted by someone else while this page still lists the name (the picker is cached).
    app_db.sessions.delete_one({"_id": "s-evil"})
    at.selectbox(key="progress_candidate").select(HOSTILE_NAME).run()
    assert any(f"No sessions of {md(HOSTILE_NAME)} to show." == i.value for i in at.info), [i.value for i in at.info]
    assert_shown_as_text(at, HOSTILE_NAME)


def test_sessions_page_delete_message_shows_a_hostile_id_escaped(app_db):
    app_db.sessions.insert_one({"_id": HOSTILE_ID, "candidate": "Ada", "role": "backend",
                                "started_at": datetime.now(UTC), "status": "complete"})
    at = open_page("pages/sessions.py", admin_token())
    at.selectbox(key="delete_target").select(HOSTILE_ID).run()
    at.checkbox(key="delete_sure").check().run()
    at.button(key="delete_button").click().run()
    assert app_db.sessions.find_one({"_id": HOSTILE_ID}) is None
    assert any(s.value.startswith(f"Deleted session {md(HOSTILE_ID)}: ") for s in at.success)
    assert_shown_as_text(at, HOSTILE_ID)


def test_research_page_shows_a_hostile_profile_name_escaped(app_db):
    name = f"[p]({EVIL}/p) ![i]({EVIL}/i.png)"
    at = open_page("pages/research.py", admin_token())
    at.text_input(key="profile_name").input(name)
    at.button(key="save").click().run()
    assert any(f"Saved profile {md(name)} version 1." == s.value for s in at.success), [s.value for s in at.success]
    assert_shown_as_text(at, name)
    at.run()  # the form's source line is drawn above the form: it shows the new profile on the next run
    assert any(f"Form values from: {md(name + ' v1')}" == c.value for c in at.caption)
    assert_shown_as_text(at, name + " v1")


def test_sidebar_and_accounts_page_show_usernames_escaped(app_db):
    token = _token(app_db, "ad_min.x", "admin")
    home = AppTest.from_file(APP, default_timeout=60)  # AppTest keeps the entry script's sidebar on the first run only
    home.session_state["auth_token"] = token
    home.run()
    sidebar = [c.value for c in home.sidebar.caption]
    assert any(f"Signed in as **{md('ad_min.x')}** (admin)" in c for c in sidebar), sidebar
    assert any("Signed in as ad_min.x (admin)" in visible(c) for c in sidebar)
    at = open_page("pages/accounts.py", token)
    at.radio(key="acct_role").set_value("coach")
    at.text_input(key="acct_username").input("co_ach.two")
    at.text_input(key="acct_password").input("coach-pass-1")
    at.button(key="acct_create").click().run()
    assert any(f"Created coach {md('co_ach.two')}." == s.value for s in at.success), [s.value for s in at.success]
    assert_shown_as_text(at, "co_ach.two")


# ----------------------------------------------------------------------------- item 7: CSV

FORMULAS = [
    "=1+1", "+1+1", "-1+1", "@SUM(A1)", " =1+1", "  =1+1", "\n=1+1", "\r\n=1+1", "\t=1+1", "\r=1+1",
    "＝1+1", "＋1+1", "－1+1", "＠SUM(A1)", "﹦1+1", "\u3000=1+1", "\u00a0=1+1", "\u200b=1+1", "\ufeff=1+1",
    "\x00=1+1", " \t\r\n＝HYPERLINK(\"http://evil.example\")", "\u2028=1+1", "\t", "\rplain",
]


@pytest.fixture
def csv_db(db):
    ensure_indexes(db)
    return db


def _csv_rows(db: Any, session_id: str, **answer: Any) -> list[dict[str, str]]:
    db.sessions.insert_one({"_id": session_id, "candidate": "Ada", "started_at": datetime.now(UTC)})
    db.answers.insert_one(make_answer(f"{session_id}-a", session_id, **answer))
    data = load_session(db, session_id)
    assert data is not None
    return list(csv.DictReader(io.StringIO(samples_csv(data))))


@pytest.mark.parametrize("formula", FORMULAS)
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(csv_db, formula):
    words = make_answer()["words"]
    words[0]["word"] = formula
    rows = _csv_rows(csv_db, "s-csv", question=formula, transcript=formula, words=words)
    answer = next(r for r in rows if r["kind"] == "answer")
    word = next(r for r in rows if r["kind"] == "word")
    for cell in (answer["question"], answer["transcript"], word["word"]):
        assert cell == "'" + formula.replace("\r\n", "\n").replace("\r", "\n"), (formula, cell)


def test_csv_carriage_return_inside_a_cell_cannot_start_a_row(csv_db):
    # A lone CR is not quoted by csv (its terminator is LF) and spreadsheets break rows on it:
    # "=1+1" would open a new row as a formula nobody checked.
    text = "my answer\r=HYPERLINK(\"http://evil.example\")"
    rows = _csv_rows(csv_db, "s-cr", question=text, transcript="fine")
    out = samples_csv(load_session(csv_db, "s-cr"))
    assert "\r" not in out
    answer = next(r for r in rows if r["kind"] == "answer")
    assert answer["question"] == "my answer\n=HYPERLINK(\"http://evil.example\")"  # one cell, quoted
    assert all(not str(r["kind"]).startswith(("=", "'")) for r in rows)


@pytest.mark.parametrize("text", ["plain answer", "a=1+1", "1+1", "mail a@b.example", "x -1", "'quoted"])
def test_csv_ordinary_text_and_numbers_are_left_alone(csv_db, text):
    words = make_answer()["words"]
    words[0]["probability"] = -0.5  # a number, not text: never prefixed
    rows = _csv_rows(csv_db, "s-ok", question=text, transcript=text, words=words)
    answer = next(r for r in rows if r["kind"] == "answer")
    word = next(r for r in rows if r["kind"] == "word")
    assert answer["question"] == text and answer["transcript"] == text and word["probability"] == "-0.5"


def test_csv_session_id_is_neutralised_too(csv_db):
    rows = _csv_rows(csv_db, "=cmd|' /C calc'!A0")
    assert {r["session_id"] for r in rows} == {"'=cmd|' /C calc'!A0"}
