"""Key-point coverage (issue 13): spans, the calibrated "covered" model, the grade it feeds, the
feedback wording, and the ``keypoints`` evaluation on the labelled set."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import grading as gr
from pipeline.card import answer_card
from pipeline.encoder import SentenceEncoder
from pipeline.evaluate_keypoints import load_examples
from pipeline.grading_features import Token
from pipeline.keypoints import DEFAULT_KEYPOINT_MODEL_PATH, FEATURES, KeypointModel, answer_spans, negated

ROOT = Path(__file__).resolve().parents[1]
CONFLICT = next(
    q
    for q in json.loads((ROOT / "pipeline" / "question_sets" / "behavioural.json").read_text())["questions"]
    if q["id"] == "conflict"
)
# The issue's failing example: a strong STAR answer with a different story than the reference.
STRONG = (
    "In my last job a product designer and I disagreed about whether the sign-up flow should have an extra "
    "verification step, about two weeks before the release. It was my job to get us to one plan before the "
    "release date without hurting our relationship. First I listened to her reasons and learned that she was "
    "worried about the support tickets we got from fake accounts. Then we agreed to judge both options by "
    "completion rate and support tickets, and we tested both versions for a week. The data showed the extra "
    "step barely changed completion and cut tickets, so we kept it. We shipped on schedule, and now we work "
    "much better together."
)
VAGUE = (
    "I think disagreements happen in every team. Usually I try to stay calm and talk about it. People have "
    "different opinions and that is normal. In the end we usually find some kind of solution and move on "
    "with the work."
)
OFF_TOPIC = (
    "I really enjoy cooking Italian food at the weekend, especially fresh pasta. Last summer I travelled to "
    "Portugal and spent a week by the sea. I also like hiking in the mountains with my friends."
)


def timed_words(text: str, start: float = 1.0, step: float = 0.4) -> list[dict]:
    return [
        {"word": " " + w, "start": round(start + i * step, 3), "end": round(start + i * step + 0.3, 3)}
        for i, w in enumerate(text.split())
    ]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    enc = SentenceEncoder()
    enc.warm_up()
    return enc


def _grade(encoder: SentenceEncoder, text: str) -> tuple[gr.Grade, gr.GradeFeatures]:
    return gr.grade(
        encoder, CONFLICT["question"], CONFLICT["reference"], CONFLICT["key_points"], text, timed_words(text)
    )


def test_spans_cover_sentences_pairs_clauses_and_windows() -> None:
    sentence = "We argued a lot, but then we tested it. It worked well today."
    toks = [Token(w, None, None) for w in sentence.split(" ")]
    found = answer_spans(toks)
    texts = [s[2] for s in found.spans]
    assert "We argued a lot, but then we tested it." in texts  # sentence
    pair = "We argued a lot, but then we tested it. It worked well today."
    assert pair in texts and pair not in found.texts  # pair: its vector comes from its two sentences
    assert found.pairs[pair] == ("We argued a lot, but then we tested it.", "It worked well today.")
    assert "We argued a lot," in texts and "but then we tested it." in texts  # clauses
    assert any(len(t.split()) == 8 for t in texts)  # an 8-word window
    assert answer_spans([]).spans == []
    assert negated("we did not ship") and negated("it wasn't ready") and not negated("we shipped it")


def test_keypoint_model_is_loaded_from_its_json() -> None:
    data = json.loads(DEFAULT_KEYPOINT_MODEL_PATH.read_text())
    model = KeypointModel.load(DEFAULT_KEYPOINT_MODEL_PATH)
    assert model.features == FEATURES == tuple(data["features"])
    assert KeypointModel.from_dict(model.to_dict()).coef == model.coef
    low = dict.fromkeys(FEATURES, 0.1)
    high = {**dict.fromkeys(FEATURES, 0.9), "kp_neg_mismatch": 0.0}
    assert model.probability(low) < 0.2 < 0.8 < model.probability(high)
    with pytest.raises(ValueError):
        KeypointModel.from_dict({**data, "coef": data["coef"][:-1]})


def test_old_records_without_features_use_the_similarity_threshold() -> None:
    old = gr.KeyPointEvidence("kp", 0.55, "span", 1.0, 2.0)  # stored before the key-point model
    f = gr.GradeFeatures(False, 30, {"cos_ref": 0.6, "cos_question": 0.5}, [old], "author")
    g = gr.score(f, gr.GradeOptions())
    assert [m["key_point"] for m in g.matched] == ["kp"] and "probability" not in g.matched[0]
    stored = f.to_dict()
    del stored["key_points"][0]["features"], stored["key_points"][0]["unsaid"]
    assert gr.GradeFeatures.from_dict(stored).key_points[0].features is None


@pytest.mark.slow
def test_issue_example_strong_answer_in_own_words_covers_its_key_points(encoder: SentenceEncoder) -> None:
    g, f = _grade(encoder, STRONG)
    assert g.coverage == 1.0, g.missed
    assert g.score is not None and g.score >= 0.65 and g.band in ("good", "strong")
    tested = next(m for m in g.matched if m["key_point"].startswith("we agreed on criteria"))
    assert "tested both versions for a week" in tested["span"] and tested["start"] is not None
    # The issue's second example: said in other words, still covered.
    other = "We agreed to judge both options by completion rate and support tickets and tested both for a week."
    g2, _ = _grade(encoder, other)
    assert any(m["key_point"].startswith("we agreed on criteria") for m in g2.matched)


@pytest.mark.slow
def test_near_miss_vague_and_off_topic(encoder: SentenceEncoder) -> None:
    near = "We kept debating the two options in meetings until our manager chose one for us."
    g, f = _grade(encoder, near)
    assert not any(m["key_point"].startswith("we agreed on criteria") for m in g.matched)
    vague, _ = _grade(encoder, VAGUE)
    assert vague.score is not None and 0.2 <= vague.score <= 0.45 and vague.coverage == 0.0
    off, off_f = _grade(encoder, OFF_TOPIC)
    assert off.matched == [] and off.score is not None and off.score <= 0.15
    assert all(e.features and e.features["kp_cos_max"] < 0.3 for e in off_f.key_points)


@pytest.mark.slow
def test_feedback_quotes_covered_spans_and_explains_misses(encoder: SentenceEncoder) -> None:
    text = (
        "My teammate and I disagreed about which database to use for the new service. "
        "We argued about it for a while and in the end my manager picked one."
    )
    words = timed_words(text, start=30.0)
    g, f = gr.grade(encoder, CONFLICT["question"], CONFLICT["reference"], CONFLICT["key_points"], text, words)
    answer = {"status": "done", "words": words, "metrics": {"has_speech": True, "word_count": len(words)},
              "grade": g.to_dict(), "features": f.to_dict()}
    advice = "\n".join(answer_card(answer).advice)
    assert re.search(r"Covered 'a colleague and I disagreed.*': you said '.*disagreed.*' \(0:3\d\)\.", advice), advice
    missed = [ln for ln in advice.splitlines() if ln.startswith("Missed ")]
    assert len(missed) == len(g.missed) >= 3
    assert all("closest: '" in ln and "similarity 0." in ln for ln in missed)
    assert any("does not say" in ln or "nothing in the answer is about it" in ln for ln in missed)


def test_labelled_set_has_every_shipped_key_point() -> None:
    ex = load_examples()
    kps = {(e["question"], e["key_point"]) for e in ex}
    assert len(kps) == 120
    kinds = {k: sum(e["kind"] == k for e in ex) for k in ("paraphrase", "near_miss", "off_topic")}
    assert kinds["paraphrase"] >= 240 and kinds["near_miss"] >= 240 and kinds["off_topic"] >= 240
    assert all(e["label"] == (e["kind"] == "paraphrase") for e in ex)


@pytest.mark.slow
def test_keypoints_evaluation_reports_held_out_precision_recall(tmp_path: Path) -> None:
    out_file = tmp_path / "out.txt"
    with open(out_file, "w") as fh:
        subprocess.run(
            [sys.executable, "-m", "pipeline.evaluate", "keypoints", "--folds", "3", "--seed", "2",
             "--cache-dir", str(tmp_path)],
            cwd=ROOT, stdout=fh, stderr=subprocess.DEVNULL, timeout=900, check=True,
        )
    out = out_file.read_text().strip().splitlines()
    assert [ln.split()[0] for ln in out[:3]] == ["fold=1", "fold=2", "fold=3"]
    m = re.fullmatch(r"precision=(\d\.\d{4}) recall=(\d\.\d{4}) f1=(\d\.\d{4})", out[-1])
    assert m, out[-1]
    p, r = float(m.group(1)), float(m.group(2))
    # Measured 0.78 / 0.73 (5 folds, seeds 0 and 1); the margin allows other fold splits.
    assert p >= 0.7 and r >= 0.65
    assert any(ln.startswith("off_topic: 240 examples, called covered 0.0") for ln in out)


@pytest.mark.slow
def test_mohler_path_unchanged_in_shape(encoder: SentenceEncoder) -> None:
    """Written answers with no author key points: the batch path (spans=False) has no evidence and the
    grade is the Mohler-calibrated value; live, derived key points are evidence only."""
    ref, ans = CONFLICT["reference"], STRONG
    batch = gr.extract_features(encoder, CONFLICT["question"], ref, None, ans, spans=False)
    assert batch.key_points == [] and batch.key_point_source == "reference"
    assert set(gr.default_calibration().features) <= set(batch.values)
    live = gr.extract_features(encoder, CONFLICT["question"], ref, None, ans)
    assert live.key_point_source == "reference" and live.key_points and live.key_points[0].features
    g_batch, g_live = gr.score(batch), gr.score(live)
    assert g_batch.coverage is None and g_live.coverage is None
    assert g_batch.score == pytest.approx(g_batch.calibrated) == pytest.approx(g_live.score)
