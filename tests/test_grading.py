"""Answer grader: text hygiene, pure scoring, real-model features, evaluation CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline import grading as gr
from pipeline.encoder import PACKAGED_WEIGHTS_SHA256, ModelIntegrityError, SentenceEncoder, verify_weights
from pipeline.evaluate import GRADING_FEATURES, fit_ridge, question_folds
from pipeline.mohler import load_mohler
from pipeline.settings import Settings
from pipeline.text import clean_text

ROOT = Path(__file__).resolve().parents[1]
MOHLER = ROOT.parent / "shared" / "data" / "grading" / "mohler_dataset_edited.csv"

QUESTION = "What is a hash table and how does it handle collisions?"
REFERENCE = (
    "A hash table stores key-value pairs in an array of buckets. A hash function maps each key to a "
    "bucket index, giving average constant-time lookup, insertion and deletion. Collisions happen when two "
    "keys map to the same bucket; they are resolved by separate chaining, where each bucket holds a linked "
    "list, or by open addressing, where the table probes for another free slot. The table is resized when "
    "the load factor grows too high."
)
KEY_POINTS = [
    "A hash function maps keys to bucket indexes",
    "Average constant-time lookup and insertion",
    "Collisions occur when two keys hash to the same bucket",
    "Separate chaining or open addressing resolve collisions",
    "Resize the table when the load factor is high",
]
GOOD = (
    "So a hash table is basically a data structure that stores key value pairs. You have an array of buckets "
    "and a hash function that takes the key and maps it to an index in that array. Because of that, lookups, "
    "inserts and deletes are constant time on average. Now a collision is when two different keys hash to the "
    "same bucket. There are two main ways to deal with it. One is separate chaining, where every bucket keeps a "
    "linked list of the entries that landed there. The other is open addressing, where if the slot is taken you "
    "probe for the next free slot, for example linear probing. And finally when the load factor, the number of "
    "entries divided by the number of buckets, gets too high, you resize the table and rehash everything so "
    "operations stay fast."
)
PARTIAL = (
    "A hash table is a structure where you store things with a key, and you can find them again quickly. I think "
    "it uses some kind of array underneath. When two keys collide, I am not totally sure, but I think you just put "
    "them in a list in the same spot. It is used a lot in databases and caches because it is fast."
)
OFF_TOPIC = (
    "Well, in my last job I worked mostly on the front end with React, and I really enjoyed working with "
    "designers. We had weekly meetings and I organized our sprint planning. My strengths are communication and "
    "teamwork, and I like to go hiking on the weekends."
)


def timed_words(text: str, start: float = 2.0, step: float = 0.4) -> list[dict]:
    """Whisper-style words (leading space, seconds) at a known, regular pace."""
    return [
        {
            "word": " " + w,
            "start": round(start + i * step, 3),
            "end": round(start + i * step + 0.3, 3),
            "probability": 0.9,
        }
        for i, w in enumerate(text.split())
    ]


def make_features(**kw) -> gr.GradeFeatures:
    base = {
        "no_speech": False,
        "n_words": 40,
        "values": {
            "cos_ref": 0.7,
            "cos_question": 0.5,
            "cos_ref_demoted": 0.6,
            "soft_recall": 0.7,
            "soft_precision": 0.6,
            "len_ratio": 0.2,
            "len_ratio_short": 0.0,
            "soft_recall_sq": 0.49,
        },
        "key_points": [
            gr.KeyPointEvidence("kp one", 0.8, "span one", 1.0, 2.0, 0, 3),
            gr.KeyPointEvidence("kp two", 0.45, "span two", 3.0, 4.5, 4, 8),
        ],
        "key_point_source": "author",
    }
    base.update(kw)
    return gr.GradeFeatures(**base)


# --- no model --------------------------------------------------------------------------------


def test_sanitize_strips_markup_controls_and_caps() -> None:
    dirty = "<script>alert(1)</script> **bold** [link](http://x.y) \x00\x1b[31mred\u202e \ud800 &amp; a < b"
    clean = gr.sanitize(dirty)
    assert "<script>" not in clean and "**" not in clean and "http" not in clean
    assert not any(ord(c) < 32 or c in "\u202e\ud800" for c in clean)
    assert "bold" in clean and "link" in clean and "& a < b" in clean
    assert len(gr.sanitize("word " * 100_000, 1000)) == 1000
    assert gr.sanitize(None) == "" and gr.sanitize(12.5) == "12.5"


def test_grader_and_question_sets_share_one_cleaner() -> None:
    """One link regex (pipeline.text): links with spaces or parentheses in the destination, nested
    images, reference links and their definitions all reduce to their text, for both callers."""
    hostile = 'Use [go]( javascript:alert(1) ) <script>x()</script>[![img](a.png)](b) [text][r] ok\n[r]: http://x "t"'
    assert clean_text(hostile, 1000) == "Use go img text ok"
    assert gr.sanitize(hostile) == "Use go img text ok"
    # The grader also drops markdown emphasis; the question sets refuse it at load time instead.
    assert gr.sanitize("**bold** `code`") == "bold code" and clean_text("**bold**", 100) == "**bold**"
    with pytest.raises(ValueError, match="must be text, not dict"):
        clean_text({"$gt": ""}, 100)
    # A reference link needs its definition (CommonMark): array code keeps its brackets, for both.
    code = "int a[2][4]; blah[][] takes [x][y] and [z][]"
    assert clean_text(code, 100) == gr.sanitize(code) == code
    assert clean_text("[x][Ref Label] and [z][]\n[ref  label]: http://e\n[Z]: http://f", 100) == "x and z"


def test_rescore_imports_no_model_code(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    code = (
        "import sys, pipeline.rescore, pipeline.grading_score, pipeline.grading_features; "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'pipeline.grading', 'pipeline.encoder', "
        "'sklearn', 'jiwer') if m in sys.modules))"
    )
    with open(out, "w") as fh:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=300, check=True)
    assert out.read_text().strip() == "[]"


def test_derive_key_points_splits_reference_into_clauses() -> None:
    kps = gr.derive_key_points(REFERENCE)
    assert 4 <= len(kps) <= gr.MAX_DERIVED_KEY_POINTS
    assert kps[0].startswith("A hash table stores key-value pairs")
    assert any("separate chaining" in k for k in kps) and any("load factor" in k for k in kps)
    assert all(len(gr.content_words(k)) >= 3 for k in kps)  # short fragments were merged
    assert gr.derive_key_points("") == []
    assert gr.derive_key_points("To simulate the behaviour of portions of the desired software product.") == [
        "To simulate the behaviour of portions of the desired software product"
    ]


def test_score_no_speech_gives_no_number() -> None:
    f = make_features(
        no_speech=True,
        n_words=0,
        values={},
        key_points=[gr.KeyPointEvidence("kp one", None, None, None, None)],
    )
    g = gr.score(f, gr.GradeOptions())
    assert g.score is None and g.band is None and g.calibrated is None and g.raw_cosine is None
    assert g.flags == ["no_speech"]
    assert g.missed == [{"key_point": "kp one", "best_similarity": None}] and g.matched == []


def test_score_formula_threshold_bands_and_flags() -> None:
    opts = gr.GradeOptions()
    f = make_features()
    g = gr.score(f, opts)
    cal = opts.calibration.predict(f.values)
    assert g.calibrated == pytest.approx(cal)
    assert [m["key_point"] for m in g.matched] == ["kp one"] and g.missed[0]["best_similarity"] == 0.45
    assert g.coverage == 0.5
    # Issue 13: the similarity half is the calibrated value stretched from floor (0) to ceiling (1).
    sim = min(1.0, max(0.0, (cal - opts.similarity_floor) / (opts.similarity_ceiling - opts.similarity_floor)))
    assert g.score == pytest.approx(0.5 * sim + 0.5 * 0.5)
    assert g.raw_cosine == 0.7 and g.flags == []

    # Lower threshold: both key points covered -> higher score. Derived key points: coverage unused.
    g2 = gr.score(f, replace(opts, keypoint_match_threshold=0.4))
    assert g2.coverage == 1.0 and g2.score > g.score
    g3 = gr.score(replace(f, key_point_source="reference"), opts)
    assert g3.coverage is None and g3.score == pytest.approx(cal)

    assert gr.band_for(0.39, (0.4, 0.6, 0.8)) == "weak"
    assert gr.band_for(0.4, (0.4, 0.6, 0.8)) == "fair"
    assert gr.band_for(0.79, (0.4, 0.6, 0.8)) == "good"
    assert gr.band_for(0.8, (0.4, 0.6, 0.8)) == "strong"

    short = gr.score(replace(f, n_words=3), opts)
    assert "too_short" in short.flags
    off_vals = dict(f.values, cos_ref=0.05, cos_question=0.1)
    off = gr.score(replace(f, values=off_vals), opts)
    assert "off_topic" in off.flags and off.score <= 0.05 and off.band == "weak"


def test_features_json_round_trip_and_dict_input() -> None:
    f = make_features(truncated=True, model_id="sha256:abc")
    d = json.loads(json.dumps(f.to_dict(), allow_nan=False))
    assert gr.GradeFeatures.from_dict(d) == f
    assert gr.score(d).to_dict() == gr.score(f).to_dict()


def test_calibration_file_and_missing_features() -> None:
    cal = gr.default_calibration()
    assert set(cal.features) == set(GRADING_FEATURES)
    assert cal.meta["cv"]["pearson_r"] >= 0.59
    assert len(cal.lo) == len(cal.features) and all(a <= b for a, b in zip(cal.lo, cal.hi, strict=True))
    # Features at their means predict the intercept; an absent feature counts as its mean.
    at_mean = dict(zip(cal.features, cal.mean, strict=True))
    assert cal.predict(at_mean) == pytest.approx(min(1.0, cal.intercept))
    assert cal.predict({}) == pytest.approx(min(1.0, cal.intercept))
    # Inputs far outside the calibration range are clipped, not extrapolated.
    huge = dict(at_mean, len_ratio=1e6)
    big = dict(at_mean, len_ratio=cal.hi[cal.features.index("len_ratio")])
    assert cal.predict(huge) == pytest.approx(cal.predict(big))
    with pytest.raises(FileNotFoundError, match="--fit-out"):
        gr.Calibration.load("/nonexistent/calibration.json")


def test_options_from_settings() -> None:
    s = Settings(keypoint_match_threshold=0.7, band_cutoffs=(0.3, 0.5, 0.9), min_answer_words=3)
    o = gr.GradeOptions.from_settings(s)
    assert o.keypoint_match_threshold == 0.7 and o.band_cutoffs == (0.3, 0.5, 0.9) and o.min_answer_words == 3
    assert (
        o.weight_similarity == s.grading.weight_similarity and o.off_topic_similarity == s.grading.off_topic_similarity
    )
    assert o.calibration == gr.default_calibration()


def test_question_folds_are_disjoint_seeded_and_complete() -> None:
    qs = [f"q{i}" for i in range(20)] * 3
    a, b, c = question_folds(qs, 5, 0), question_folds(qs, 5, 0), question_folds(qs, 5, 1)
    assert a == b and a != c
    assert set().union(*a) == set(qs) and sum(len(f) for f in a) == 20


def test_fit_ridge_recovers_linear_relation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = 0.5 + 0.1 * x[:, 0] - 0.05 * x[:, 2]
    cal = fit_ridge(x, y, ("a", "b", "c"), alpha=1e-6)
    pred = [cal.predict({"a": r[0], "b": r[1], "c": r[2]}) for r in x[:20]]
    assert np.allclose(pred, y[:20], atol=1e-4)


def test_load_mohler_drops_bad_rows() -> None:
    if not MOHLER.is_file():
        pytest.skip("../shared/data not beside the checkout")
    rows = load_mohler(MOHLER)
    assert len(rows) == 2273 - 9
    assert all("#NAME?" not in r["student_answer"] for r in rows)


def test_weight_hash_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ModelIntegrityError, match="changed"):
        verify_weights(tmp_path, PACKAGED_WEIGHTS_SHA256)
    with pytest.raises(ModelIntegrityError, match="not found"):
        verify_weights(tmp_path / "missing", PACKAGED_WEIGHTS_SHA256)
    with pytest.raises(ModelIntegrityError):
        SentenceEncoder(tmp_path, expected_sha256=PACKAGED_WEIGHTS_SHA256)


# --- real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    enc = SentenceEncoder()
    enc.warm_up()
    return enc


@pytest.mark.slow
def test_encoder_loads_packaged_verified_weights(encoder: SentenceEncoder) -> None:
    assert encoder.weights_sha256 == PACKAGED_WEIGHTS_SHA256
    v = encoder.encode(["a hash table maps keys to buckets", "a dictionary uses hashing", "I like hiking"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
@pytest.mark.parametrize("key_points", [KEY_POINTS, None], ids=["author", "derived"])
def test_good_outranks_partial_outranks_off_topic(encoder: SentenceEncoder, key_points) -> None:
    grades = {
        name: gr.grade(encoder, QUESTION, REFERENCE, key_points, text, timed_words(text))[0]
        for name, text in (("good", GOOD), ("partial", PARTIAL), ("off", OFF_TOPIC))
    }
    assert grades["good"].score > grades["partial"].score > grades["off"].score
    assert grades["good"].raw_cosine > grades["off"].raw_cosine
    assert grades["good"].band in ("good", "strong") and grades["off"].band == "weak"
    assert "off_topic" in grades["off"].flags and "off_topic" not in grades["good"].flags
    assert len(grades["good"].matched) > len(grades["partial"].matched) >= len(grades["off"].matched) == 0
    if key_points:
        assert grades["good"].coverage >= 0.8 and grades["off"].coverage == 0.0


@pytest.mark.slow
def test_evidence_spans_carry_the_words_timestamps(encoder: SentenceEncoder) -> None:
    words = timed_words(GOOD, start=5.0, step=0.37)
    f = gr.extract_features(encoder, QUESTION, REFERENCE, KEY_POINTS, GOOD, words)
    g = gr.score(f, gr.GradeOptions())
    assert f.key_point_source == "author" and len(f.key_points) == len(KEY_POINTS)
    for e in f.key_points:
        assert e.start == words[e.word_start]["start"] and e.end == words[e.word_end]["end"]
        assert e.span == " ".join(w["word"].strip() for w in words[e.word_start : e.word_end + 1])
        assert e.start < e.end
    # The chaining / open addressing key point is found where the answer talks about it.
    chaining = next(e for e in f.key_points if e.key_point.startswith("Separate chaining"))
    lo = GOOD.split().index("chaining,") - 12
    hi = GOOD.split().index("probing.") + 1
    assert lo <= chaining.word_start and chaining.word_end <= hi
    assert "chaining" in chaining.span or "addressing" in chaining.span
    m = next(m for m in g.matched if m["key_point"] == chaining.key_point)
    assert (m["start"], m["end"]) == (chaining.start, chaining.end)
    # Without words the spans are found in the transcript but carry no times.
    f2 = gr.extract_features(encoder, QUESTION, REFERENCE, KEY_POINTS, GOOD, None)
    assert all(e.start is None and e.end is None and e.span for e in f2.key_points)
    # Words alone (empty transcript text) are enough.
    f3 = gr.extract_features(encoder, QUESTION, REFERENCE, KEY_POINTS, "", words)
    assert not f3.no_speech and f3.values["cos_ref"] == pytest.approx(f.values["cos_ref"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "transcript, words",
    [
        ("", []),
        ("   ", None),
        (None, None),
        ("... ?! -", [{"word": " ...", "start": 0, "end": 1}]),
        ("", [{"word": "", "start": 0.0, "end": 0.5}, {"word": "  ", "start": 0.5, "end": 1.0}]),
    ],
)
def test_no_speech_gives_no_score_and_no_model_call(encoder: SentenceEncoder, transcript, words) -> None:
    calls = encoder.model_calls
    g, f = gr.grade(encoder, QUESTION, REFERENCE, KEY_POINTS, transcript, words)
    assert encoder.model_calls == calls
    assert f.no_speech and g.score is None and g.band is None and g.flags == ["no_speech"]
    assert [m["key_point"] for m in g.missed] == KEY_POINTS


@pytest.mark.slow
@pytest.mark.parametrize(
    "question, reference, key_points, transcript, words",
    [
        (QUESTION, REFERENCE, KEY_POINTS, "hash table buckets " * 200_000, None),  # ~4 MB
        (
            QUESTION,
            REFERENCE,
            KEY_POINTS,
            "\x00\x07<b>hash</b>\u202e **keys** `rm -rf /` [x](javascript:1)\ud800 " * 50,
            None,
        ),
        (
            QUESTION,
            REFERENCE,
            None,
            "哈希表把键映射到桶。冲突时使用链表。 Eine Hashtabelle speichert Schlüssel. مرحبا 🙂",
            None,
        ),
        ("<h1>" + "?" * 10_000, "#" * 50_000, ["", None, "\x00"] * 50, "a b c", [{"word": None}, {}, "x", 5]),
        (None, None, None, "only an answer and nothing else to compare", None),
        (QUESTION, REFERENCE, KEY_POINTS, "hash", [{"word": "hash", "start": float("nan"), "end": "soon"}]),
    ],
    ids=["huge", "markup-control", "non-english", "junk-everywhere", "no-reference", "bad-times"],
)
def test_hostile_text_does_not_crash(
    encoder: SentenceEncoder, question, reference, key_points, transcript, words
) -> None:
    g, f = gr.grade(encoder, question, reference, key_points, transcript, words)
    json.dumps(f.to_dict(), allow_nan=False)  # storable as-is
    json.dumps(g.to_dict(), allow_nan=False)
    assert g.score is not None and 0.0 <= g.score <= 1.0 and g.band in gr.BANDS
    assert all(math.isfinite(v) for v in f.values.values())
    for e in f.key_points:
        assert e.span is None or ("\x00" not in e.span and "<b>" not in e.span)
        assert e.start is None or math.isfinite(e.start)
    assert f.n_words <= gr.MAX_WORDS


@pytest.mark.slow
def test_huge_answer_is_truncated_and_flagged(encoder: SentenceEncoder) -> None:
    g, f = gr.grade(encoder, QUESTION, REFERENCE, KEY_POINTS, "hash table buckets " * 200_000, None)
    assert f.truncated and "truncated" in g.flags and f.n_words == gr.MAX_WORDS


@pytest.mark.slow
def test_score_on_stored_features_equals_grade(encoder: SentenceEncoder) -> None:
    opts = gr.GradeOptions()
    for text in (GOOD, PARTIAL, OFF_TOPIC, "too short"):
        g, f = gr.grade(encoder, QUESTION, REFERENCE, KEY_POINTS, text, timed_words(text), opts)
        stored = json.loads(json.dumps(f.to_dict()))  # what MongoDB would hand back
        assert gr.score(gr.GradeFeatures.from_dict(stored), opts) == g
        assert gr.score(stored, opts).to_dict() == g.to_dict()
    assert "too_short" in g.flags


@pytest.mark.slow
def test_options_change_band_without_reencoding(encoder: SentenceEncoder) -> None:
    g, f = gr.grade(encoder, QUESTION, REFERENCE, KEY_POINTS, PARTIAL, timed_words(PARTIAL))
    calls = encoder.model_calls
    s = g.score
    assert s is not None
    strict = gr.score(f, replace(gr.GradeOptions(), band_cutoffs=(s + 0.01, s + 0.02, s + 0.03)))
    lenient = gr.score(f, replace(gr.GradeOptions(), band_cutoffs=(s - 0.03, s - 0.02, s - 0.01)))
    assert (strict.band, lenient.band) == ("weak", "strong") and strict.score == lenient.score == s
    loose = gr.score(f, replace(gr.GradeOptions(), keypoint_match_threshold=0.05))  # a probability now (issue 13)
    assert len(loose.matched) > len(g.matched) and loose.score > s
    assert encoder.model_calls == calls


@pytest.mark.slow
def test_calibration_features_are_all_extracted(encoder: SentenceEncoder) -> None:
    f = gr.extract_features(encoder, QUESTION, REFERENCE, None, GOOD)
    assert set(gr.default_calibration().features) <= set(f.values)
    assert f.values["soft_recall"] > 0.5 and f.values["cos_ref"] > 0.6


@pytest.mark.slow
def test_evaluate_command_prints_final_metrics_line() -> None:
    if not MOHLER.is_file():
        pytest.skip("../shared/data not beside the checkout")
    out = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.evaluate",
                "grading",
                "--data",
                str(MOHLER),
                "--folds",
                "2",
                "--seed",
                "3",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    assert [ln.split()[0] for ln in out[:2]] == ["fold=1", "fold=2"]
    assert any(ln.startswith("raw_cosine pearson_r=") for ln in out)
    m = re.fullmatch(r"pearson_r=(-?\d+\.\d{4}) rmse=(\d+\.\d{4})", out[-1])
    assert m, out[-1]
    r, rmse = float(m.group(1)), float(m.group(2))
    raw_r = float(re.search(r"raw_cosine pearson_r=(-?[\d.]+)", "\n".join(out)).group(1))
    assert r > raw_r and r > 0.55 and 0.5 < rmse < 1.0
