"""Many nodes, for real: two app nodes on one data folder (the first starts the embedded SecantusDB,
the second reuses it) behind Debian's HAProxy on loopback, candidates in Debian's Chromium with fake
camera and microphone fed from ../shared/data (issue 14, item 5).

- two candidates land on different nodes (HAProxy's cookie says which) and each answers;
- a third candidate, past the total capacity (one live session per node here), is told that every
  interview slot is busy;
- a coach on either node sees both sessions;
- one node is killed mid-answer: its candidate reloads through HAProxy, lands on the other node,
  the interrupted answer is finished there from the audio stored while it was recorded (incomplete,
  with its words and frames) and the session resumes to the end.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
from playwright.sync_api import sync_playwright

from pipeline.load_balancer import Node
from pipeline.storage import free_port
from tests.browser import (
    answer_audio_seconds,
    fake_media_args,
    go_to_interview,
    launch_chromium,
    running_app,
    shot,
    start_media,
    wait_text,
)
from tests.multinode import database_uri, haproxy, health, kill_node, node_of, stop_database
from tests.test_e2e_interview import make_fake_media
from tests.waiting import wait_until

ADMIN_PASSWORD = "multi-node admin 2026!"
BUSY = "All interview slots on this server are busy"


def _answer_one(page: Any, artifacts: Path, name: str) -> float:
    """Start, speak (the fake microphone), finish; seconds from finish to feedback."""
    page.get_by_role("button", name="Start answer").click()
    wait_text(page, r"Live transcript:.*\b(country|Americans|fellow)\b", 90)
    shot(page, artifacts, f"multinode_{name}_live")
    finish = time.monotonic()
    page.get_by_role("button", name="Finish answer").click()
    wait_text(page, "Feedback:", 120)
    return time.monotonic() - finish


def _coach_sees(browser: Any, url: str, node: str, names: list[str], artifacts: Path) -> None:
    """A coach pinned to ``node`` (its cookie) signs in and finds every candidate's session."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    host = url.split("//", 1)[1].split(":")[0]
    context.add_cookies([{"name": "MOCKAI_NODE", "value": node, "domain": host, "path": "/"}])
    page = context.new_page()
    page.goto(f"{url}/sessions")
    wait_text(page, "Sign in to see this page", 90)
    page.get_by_label("Username", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    wait_text(page, "Search candidate or role", 90)
    box = page.get_by_label("Search candidate or role", exact=True)
    for name in names:  # the list is a data grid (canvas): search narrows it to that candidate's one session
        box.fill("no such candidate")
        box.press("Enter")
        wait_text(page, "No sessions match these filters", 60)
        box.fill(name)
        box.press("Enter")
        wait_text(page, r"Page 1 · sessions 1–1\b", 60)
    assert node_of(context) == node, "the coach stayed on the node they were pinned to"
    shot(page, artifacts, f"multinode_coach_on_{node}")
    print(f"coach on node {node} sees the sessions of {', '.join(names)}")
    context.close()


@pytest.mark.multinode
@pytest.mark.e2e
@pytest.mark.slow
def test_two_nodes_behind_haproxy(tmp_path, shared_data, artifacts):
    video, audio = make_fake_media(shared_data, tmp_path / "media")
    data = tmp_path / "data"  # one machine: both nodes share the data folder (database, journal, secrets)
    db_name = f"multinode_{uuid.uuid4().hex[:8]}"
    common = {"MOCKAI_DB_NAME": db_name, "MOCKAI_FLUSH_SECONDS": "1", "MOCKAI_ADMIN_PASSWORD": ADMIN_PASSWORD,
              "MOCKAI_MAX_LIVE_SESSIONS": "1", "MOCKAI_ORPHAN_ANSWER_SECONDS": "3",
              "MOCKAI_STALE_ANSWER_SECONDS": "4", "MOCKAI_SPEECH_WORKERS": "1"}
    ports = {name: (free_port(), free_port()) for name in ("a", "b")}

    def env(name: str) -> dict[str, str]:
        return {**common, "MOCKAI_NODE_NAME": name, "MOCKAI_HEALTH_PORT": str(ports[name][1])}

    try:
        with running_app(data, env=env("a"), port=ports["a"][0], log_name="node-a.log") as node_a, \
                running_app(data, env=env("b"), port=ports["b"][0], log_name="node-b.log") as node_b, \
                haproxy([Node(n, "127.0.0.1", *ports[n]) for n in ("a", "b")], tmp_path) as lb, \
                sync_playwright() as p:
            browser = launch_chromium(p, fake_media_args(video, audio))
            served: dict[str, str] = {}

            # Two candidates at once: each lands on its own node and holds its one live slot.
            pages = {}
            for who in ("Ada Multinode", "Grace Multinode"):
                context = browser.new_context(viewport={"width": 1280, "height": 1000})
                page = context.new_page()
                page.goto(lb.url)
                go_to_interview(page, artifacts, who, 2 if who.startswith("Ada") else 1)
                node = node_of(context)
                assert node in ("a", "b"), context.cookies()
                served[who], pages[who] = node, page
                wait_until(lambda n=node: health(ports[n][1]).body.get("live_sessions") == 1,
                           f"node {node} to count {who}'s live session", 60)
                print(f"\n{who} is served by node {node}")
            # The node that served the first page started the embedded database; the other reuses it.
            db = pymongo.MongoClient(database_uri(data))[db_name]
            assert set(served.values()) == {"a", "b"}, f"both candidates on one node: {served}"
            for n in ("a", "b"):
                wait_until(lambda n=n: health(ports[n][1], "/lb").code == 404, f"node {n} reported full", 30)

            # A third candidate past the total capacity is told so, and nothing starts for them.
            late = browser.new_context(viewport={"width": 1280, "height": 1000})
            late_page = late.new_page()
            late_page.goto(lb.url)
            late_page.get_by_text("I understand and agree").click(timeout=240_000)
            late_page.get_by_role("button", name="Continue").click()
            late_page.get_by_label("Your name").fill("Late Multinode")
            late_page.get_by_label("Your name").press("Enter")
            late_page.get_by_role("button", name="Next").click()
            busy = wait_text(late_page, BUSY + r"[^\n]*", 90).group(0)
            shot(late_page, artifacts, "multinode_third_candidate_busy")
            print(f"third candidate (node {node_of(late)}): {busy}")
            late.close()

            # Grace answers her one question on her node and finishes; her slot is free again.
            grace = pages["Grace Multinode"]
            feedback_s = _answer_one(grace, artifacts, "grace")
            wait_text(grace, "Session summary", 90)
            grace.context.close()
            print(f"Grace answered on node {served['Grace Multinode']}: finish -> feedback {feedback_s:.1f}s")
            other = served["Grace Multinode"]
            wait_until(lambda: health(ports[other][1], "/lb").code == 200, f"node {other} free again", 120)

            # A coach on either node sees both candidates' sessions.
            _coach_sees(browser, lb.url, "a", ["Ada Multinode", "Grace Multinode"], artifacts)
            _coach_sees(browser, lb.url, "b", ["Ada Multinode", "Grace Multinode"], artifacts)

            # Ada's node dies mid-answer.
            ada = pages["Ada Multinode"]
            ada_node = served["Ada Multinode"]
            ada.get_by_role("button", name="Start answer").click()
            wait_text(ada, r"Live transcript:.*\b(country|Americans|fellow)\b", 90)
            heard = answer_audio_seconds(ada)
            kill_node(node_a.process if ada_node == "a" else node_b.process)
            print(f"node {ada_node} killed {heard:.1f}s into Ada's answer")
            session = db.sessions.find_one({"candidate": "Ada Multinode"})
            assert session is not None

            # The other node finishes the interrupted answer from what was stored while it was recorded.
            cut = wait_until(lambda: db.answers.find_one({"session_id": session["_id"], "status": "incomplete"}),
                             "the interrupted answer finished by the other node", 180)
            assert cut["words"] and cut["capture"]["recovered"] is True, cut
            kept = cut["capture"]["audio_seconds"]
            assert kept >= heard - 3.0, (kept, heard)  # at most one unwritten chunk + a writer flush lost
            assert db.frames.count_documents({"answer_id": cut["_id"]}) > 0, "its frames were kept"
            print(f"interrupted answer kept as incomplete: {kept:.1f}s of audio stored of {heard:.1f}s heard, "
                  f"{len(cut['words'])} words: {cut['transcript']!r}")

            # Ada reloads through HAProxy, lands on the surviving node and resumes her session.
            ada.reload()
            ada.get_by_text("I understand and agree").click(timeout=240_000)
            survivor = node_of(ada.context)
            assert survivor != ada_node and survivor in ("a", "b"), ada.context.cookies()
            print(f"Ada reloaded through HAProxy: now served by node {survivor}")
            ada.get_by_role("button", name="Continue").click()
            ada.get_by_label("Your name").fill("Ada Multinode")
            ada.get_by_label("Your name").press("Enter")
            wait_text(ada, "unfinished session", 60)
            ada.get_by_role("button", name="Resume that session").click()
            wait_text(ada, "Device check")
            start_media(ada)
            wait_text(ada, "Face found|No face found", 60)
            wait_text(ada, "Microphone is picking up sound", 60)
            ada.get_by_role("button", name="Start the interview").click()
            for n in (1, 2):
                wait_text(ada, f"Question {n} of 2")
                _answer_one(ada, artifacts, f"ada_resumed_{n}")
            wait_text(ada, "Session summary", 120)
            shot(ada, artifacts, "multinode_ada_resumed_summary")
            browser.close()

            answers = list(db.answers.find({"session_id": session["_id"]}).sort("started_ms", 1))
            assert [a["status"] for a in answers] == ["incomplete", "complete", "complete"], answers
            print(f"Ada's session {session['_id'][:8]}: answers {[a['status'] for a in answers]}, "
                  f"resumed on node {survivor}")
            db.client.drop_database(db_name)
            db.client.close()
    finally:
        stop_database(data)
