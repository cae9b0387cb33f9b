"""STAR structure of behavioural answers (pipeline.star) with the real sentence encoder, its card and timeline
evidence, and the question-disjoint evaluation (pipeline.evaluate_star)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from pipeline.card import answer_card
from pipeline.encoder import SentenceEncoder
from pipeline.evaluate_star import answer_features, cross_validate, load_star_set, timed_words
from pipeline.export import card_html
from pipeline.star import (
    FEATURE_NAMES,
    LABELS,
    is_behavioural,
    load_model,
    measurable,
    segment,
    star_advice,
    star_for_answer,
    star_summary_lines,
)
from pipeline.timeline import answer_timeline

CONFLICT = "Tell me about a time you disagreed with a colleague. How did you handle it?"
DEADLINE = "Tell me about a time you had to deliver something under a very tight deadline."
TECHNICAL = "How does a hash table handle collisions?"

# Written for these tests: not in the labelled set the shipped model was fitted on.
FULL = [
    "Two years ago at a fintech startup our QA lead and I disagreed about whether to delay a release for more manual testing.",
    "I owned the release, so it was my job to get us to a decision that both of us could live with by Thursday.",
    "I sat down with her and asked which bugs worried her most, and she showed me three payment edge cases.",
    "I wrote automated tests for those three cases that evening and I asked her to review them.",
    "The release went out on time, and in the next month payment bugs reported by customers fell by forty percent.",
]
NO_RESULT = [
    "Last year our biggest customer asked for a custom export with only four days before their audit.",
    "As the account engineer I was responsible for getting it to them before the audit started.",
    "I called their finance lead to find out exactly which fields the auditors needed.",
    "I built the export on top of our existing reporting job and I tested it against their old spreadsheets.",
]
WE_HEAVY = [
    "At my last company our mobile app kept crashing on older phones right before a big marketing campaign.",
    "My task was to make the app stable before the campaign launched in two weeks.",
    "We went through the crash reports together and we found that most crashes came from one image library.",
    "We replaced the library and we added tests on three old devices, and I wrote the rollout plan.",
    "The crash rate dropped from two percent of sessions to a tenth of a percent.",
]
T0 = 1_795_610_623_703
AUDIO_OFFSET_S = 0.5


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(threads=1)


def stored_answer(encoder: SentenceEncoder, question: str, sentences: list[str]) -> dict[str, Any]:
    """An answer document as the speech worker stores it (words on the audio clock, 0.5 s after the start)."""
    words = timed_words(sentences)
    return {
        "_id": "a-star", "session_id": "s-1", "index": 0, "question": question, "status": "complete",
        "started_ms": T0, "audio_started_ms": T0 + int(AUDIO_OFFSET_S * 1000), "ended_ms": T0 + 60_000,
        "transcript": " ".join(sentences), "words": words,
        "metrics": {"has_speech": True, "wpm": 150.0, "word_count": len(words)},
        "grade": {"score": 0.7, "band": "good", "flags": [], "matched": [], "missed": []},
        "star": star_for_answer(encoder, question, words),
    }


def test_the_shipped_model_matches_the_features() -> None:
    model = load_model()
    assert model.features == FEATURE_NAMES
    assert model.coef.shape == (len(LABELS), len(FEATURE_NAMES))
    assert model.log_trans.shape == (len(LABELS), len(LABELS))


def test_behavioural_questions_are_recognised() -> None:
    assert is_behavioural(CONFLICT)  # shipped, type "behavioural"
    assert not is_behavioural(TECHNICAL)
    assert not is_behavioural("Explain the CAP theorem.")
    assert is_behavioural("Describe a situation where you had to persuade your manager.")  # custom prompt
    assert not is_behavioural(CONFLICT, "technical")  # an explicit type wins
    assert is_behavioural("What is your proudest achievement?", "behavioural")


def test_segmentation_cuts_at_punctuation_and_long_pauses() -> None:
    words = timed_words(["I led the project.", "It shipped on time!"])
    assert [s.text for s in segment(words)] == ["I led the project.", "It shipped on time!"]
    run_on = [{"word": w, "start": i * 0.4, "end": i * 0.4 + 0.3} for i, w in enumerate(["so", "I", "led", "it", "then"])]
    run_on += [{"word": w, "start": 5.0 + i * 0.4, "end": 5.3 + i * 0.4} for i, w in enumerate(["it", "worked", "well"])]
    cut = segment(run_on)
    assert [s.text for s in cut] == ["so I led it then", "it worked well"]
    assert cut[1].start == pytest.approx(5.0) and cut[0].end == pytest.approx(1.9)
    assert (cut[1].first, cut[1].stop) == (5, 8)
    # Whisper on a spoken answer: a missed full stop ("week The") and clauses joined by commas.
    asr = timed_words(["In my last job a designer and I disagreed about an extra step in our sign up flow,"
                       " I was the engineer on the project, so it was my job to get us to a decision before the"
                       " sprint ended and we tested both versions for a week The lighter version cut tickets by half."])
    assert [s.text for s in segment(asr)] == [
        "In my last job a designer and I disagreed about an extra step in our sign up flow,",
        "I was the engineer on the project,",
        "so it was my job to get us to a decision before the sprint ended and we tested both versions for a week",
        "The lighter version cut tickets by half.",
    ]


def test_full_star_answer_gives_four_parts_in_order_with_times(encoder: SentenceEncoder) -> None:
    words = timed_words(FULL)
    star = star_for_answer(encoder, CONFLICT, words)
    assert star is not None
    assert [s["label"] for s in star["sentences"]] == ["S", "T", "A", "A", "R"]
    assert star["order"] == ["S", "T", "A", "R"] and star["in_order"]
    parts = star["parts"]
    starts = [parts[p]["start"] for p in "STAR"]
    assert all(parts[p]["present"] for p in "STAR")
    assert starts == sorted(starts) and starts[0] == pytest.approx(words[0]["start"])
    assert parts["R"]["end"] == pytest.approx(words[-1]["end"])
    assert all(parts[p]["end"] > parts[p]["start"] for p in "STAR")
    assert all(0.5 < parts[p]["confidence"] <= 1.0 for p in "STAR")
    assert parts["A"]["text"].startswith("I sat down with her")
    assert star["result_measurable"] is True and star["result_measure"] == "forty percent"
    assert (star["action_i"], star["action_we"]) == (3, 0)
    assert star_advice(star) == []
    lines = star_summary_lines(star)
    assert lines[0].startswith("STAR Situation 1.0-") and lines[3].startswith("STAR Result")
    assert lines[4] == "STAR order S-T-A-R; Action 'I' x3, 'we' x0, measurable: 'forty percent'"
    assert star_summary_lines(None) == []


def test_missing_result_gives_the_advice(encoder: SentenceEncoder) -> None:
    doc = stored_answer(encoder, DEADLINE, NO_RESULT)
    assert not doc["star"]["parts"]["R"]["present"]
    assert doc["star"]["result_measurable"] is None
    card = answer_card(doc)
    assert "STAR: no Result: say what changed, with a number if you have one." in card.advice
    assert card.star is not None
    rows = {r["part"]: r for r in card.star_table()}
    assert rows["Result"]["found"] == "✗ missing" and rows["Result"]["at (s)"] == ""
    assert rows["Action"]["found"] == "✓ found"
    # Times on the answer axis: the words' audio clock plus the 0.5 s the audio started late.
    action = next(p for p in card.star["parts"] if p["part"] == "Action")
    first_action = next(s for s in doc["star"]["sentences"] if s["label"] == "A")
    assert action["start_s"] == pytest.approx(first_action["start"] + AUDIO_OFFSET_S)


def test_we_heavy_action_gets_the_i_we_line_and_a_number_makes_the_result_measurable(
        encoder: SentenceEncoder) -> None:
    doc = stored_answer(encoder, DEADLINE, WE_HEAVY)
    star = doc["star"]
    assert [s["label"] for s in star["sentences"]] == ["S", "T", "A", "A", "R"]
    assert (star["action_we"], star["action_i"]) == (4, 1)
    assert star["result_measurable"] is True and star["result_measure"] == "from two percent of sessions to a tenth of a percent"
    card = answer_card(doc)
    assert "STAR: Action says 'we' 4 times and 'I' once: say what you did." in card.advice
    summary = next(a for a in card.advice if a.startswith("STAR: Situation at"))
    assert "Result at" in summary and "measurable" in summary
    html = card_html(card)
    assert "STAR structure" in html and "✓ found" in html


def test_vague_answer_gets_no_parts_and_advice_for_each(encoder: SentenceEncoder) -> None:
    vague = ["I think disagreements happen on every team.", "I usually try to listen and stay positive.",
             "Communication is really the key to working well with people."]
    star = star_for_answer(encoder, CONFLICT, timed_words(vague))
    assert star is not None
    present = [p for p in "STAR" if star["parts"][p]["present"]]
    assert len(present) <= 1
    assert sum(line.startswith("no ") for line in star_advice(star)) >= 3


def test_non_behavioural_question_has_no_star(encoder: SentenceEncoder) -> None:
    assert star_for_answer(encoder, TECHNICAL, timed_words(FULL)) is None
    doc = stored_answer(encoder, TECHNICAL, FULL)
    card = answer_card(doc)
    assert card.star is None and card.star_table() == []
    assert not any(a.startswith("STAR") for a in card.advice + card.missing)


def test_no_transcript_gives_a_message_not_parts(encoder: SentenceEncoder) -> None:
    assert star_for_answer(encoder, CONFLICT, []) == {"version": 1, "missing": "No transcript: no STAR structure."}
    old = stored_answer(encoder, CONFLICT, FULL)
    del old["star"]  # stored before STAR detection existed
    card = answer_card(old)
    assert card.star is None
    assert any("No STAR analysis stored" in m for m in card.missing)


def test_timeline_shades_the_parts_on_the_answer_axis(encoder: SentenceEncoder) -> None:
    doc = stored_answer(encoder, CONFLICT, FULL)
    fig = answer_timeline(doc, [])
    bands = {t.name: t for t in fig.data if (t.name or "").startswith("STAR ")}
    assert set(bands) == {"STAR Situation", "STAR Task", "STAR Action", "STAR Result"}
    xs = [x for x in bands["STAR Result"].x if x is not None]
    assert min(xs) == pytest.approx(doc["star"]["parts"]["R"]["start"] + AUDIO_OFFSET_S, abs=0.05)
    assert "forty percent" in bands["STAR Result"].text
    technical = answer_timeline(stored_answer(encoder, TECHNICAL, FULL), [])
    assert not [t for t in technical.data if (t.name or "").startswith("STAR ")]


def test_measurable_outcomes() -> None:
    assert measurable("revenue went from 2 million to 3 million") is not None
    assert measurable("we cut costs by 15%") == "15%"
    assert measurable("it saved about $40k a year") == "40k"
    assert measurable("activation went from forty to fifty two percent") == "from forty to fifty two percent"
    assert measurable("someone noticed") is None
    assert measurable("we delivered two days early") == "two"
    assert measurable("everyone was happy with it") is None


def test_evaluation_on_question_disjoint_folds(encoder: SentenceEncoder) -> None:
    rows = load_star_set()
    assert len({r["question_id"] for r in rows}) >= 12
    xs = answer_features(encoder, rows)
    assert sum(len(a.unit_gold) for a in xs) >= sum(len(r["sentences"]) for r in rows)  # clauses too
    out = io.StringIO()
    res = cross_validate(rows, xs, folds=3, seed=0, out=out)
    # Measured (3 folds, seed 0): star_f1 0.864, weakest part R 0.758, presence 0.945; 5 folds: 0.858 / 0.870.
    assert res["star_f1"] >= 0.8
    assert all(res[p] >= 0.65 for p in "STAR")
    assert res["presence_f1"] >= 0.9
    assert out.getvalue().count("fold=") == 3
    # Re-punctuated like a recogniser (full stops dropped or commas): measured 0.732 (3 folds, seed 0).
    asr = cross_validate(rows, answer_features(encoder, rows, asr_seed=0), folds=3, seed=0, out=io.StringIO())
    assert 0.65 <= asr["star_f1"] < res["star_f1"]
