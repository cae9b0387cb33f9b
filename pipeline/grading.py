"""Answer grading: compare a spoken answer with the author's reference answer.

Two stages, so stored answers can be re-scored without any model:

1. ``extract_features(encoder, question, reference, key_points, transcript, words)`` runs the
   sentence model once (one ``encoder.encode`` call) and returns ``GradeFeatures``, a plain
   JSON-able record (``to_dict``/``from_dict``) meant to be stored in MongoDB:
   - ``cos_ref`` / ``cos_question``: sentence cosine of the answer to the reference / question
     (the "raw cosine" the UI shows beside the grade);
   - ``cos_ref_demoted``: the same with question words removed from both texts;
   - word alignment (Sultan et al. 2016 style): each reference content word is aligned to
     its most similar answer content word (same light stem = 1.0, else cosine of the two
     words' MiniLM embeddings); ``soft_recall`` = mean best similarity over reference words,
     ``soft_precision`` = the same from the answer side, ``align_recall``/``align_precision`` =
     the fraction whose best similarity is >= 0.5; words that appear in the question are left
     out on both sides (question demotion), unless that leaves the reference empty;
   - lexical: stem overlap both ways, ``len_ratio`` = log((answer content words + 1) /
     (reference content words + 1)), ``log_words``;
   - per key point (``pipeline.keypoints``), the best answer span among sentences, sentence
     pairs, clauses and 6/12-word windows, by sentence cosine plus soft alignment of the key
     point's content words, with the coverage features the key-point model decides on, the
     words the span leaves unsaid, its text and start/end seconds taken from ``words``.
2. ``score(features, options)`` (``pipeline.grading_score``, re-exported here) is pure and fast
   (no model, imports no model code): it applies the calibration and thresholds in
   ``GradeOptions`` and returns a ``Grade``. The stored record itself is in
   ``pipeline.grading_features``; text cleaning and tokens in ``pipeline.text``.

Derived key points: when the author gave none, the reference is split into sentences
(. ! ?), then at ; and :, and clauses longer than 12 words again at commas; fragments with
fewer than 3 content words are merged into the previous clause; at most 10 are kept. They
are shown as evidence (matched / missed) but not added to the score, since the calibrated
part already measures agreement with the whole reference.

Hostile input: every text is NFKC-normalized, HTML tags/entities and markdown markup are
removed, control characters replaced, and lengths capped (characters, words, key points;
raw input is cut before the cleaning regexes run) before any model work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.grading_features import FEATURES_VERSION, GradeFeatures, KeyPointEvidence, Token
from pipeline.grading_score import (
    BANDS,
    DEFAULT_CALIBRATION_PATH,
    Calibration,
    Grade,
    GradeOptions,
    band_for,
    default_calibration,
    score,
)
from pipeline.keypoints import Spans, answer_spans, coverage_values, key_point_words, match_key_points
from pipeline.text import MAX_WORD_CHARS, STOPWORDS, TOKEN, content_words, stem, tokens
from pipeline.text import sanitize as _sanitize

__all__ = [
    "BANDS",
    "DEFAULT_CALIBRATION_PATH",
    "FEATURES_VERSION",
    "Calibration",
    "Encoder",
    "Grade",
    "GradeFeatures",
    "GradeOptions",
    "KeyPointEvidence",
    "STOPWORDS",
    "Token",
    "band_for",
    "content_words",
    "default_calibration",
    "derive_key_points",
    "extract_features",
    "grade",
    "sanitize",
    "score",
    "stem",
    "texts_to_encode",
    "tokens",
]


# Caps: a 10-minute answer is ~1,500 words / ~9,000 characters; these leave room and bound work.
MAX_TEXT_CHARS = 20_000
MAX_REFERENCE_CHARS = 5_000
MAX_QUESTION_CHARS = 2_000
MAX_KEY_POINT_CHARS = 500
MAX_KEY_POINTS = 20
MAX_DERIVED_KEY_POINTS = 10
MAX_WORDS = 3_000
CHUNK_WORDS = 120  # MiniLM truncates at 256 word pieces; longer answers are embedded in chunks
ALIGN_THRESHOLD = 0.5


_SENT_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE = re.compile(r"\s*[;:]\s+")
_COMMA = re.compile(r",\s+")
_TOKEN = TOKEN


class Encoder(Protocol):
    model_id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def sanitize(text: Any, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Plain, single-spaced text: no HTML, markdown markup or control characters; capped
    (``pipeline.text.sanitize``)."""
    return _sanitize(text, max_chars)


def derive_key_points(reference: str) -> list[str]:
    """Split a reference answer into sentence / clause key points (see module docstring)."""
    reference = sanitize(reference, MAX_REFERENCE_CHARS)
    pieces: list[str] = []
    for sentence in _SENT_END.split(reference):
        for clause in _CLAUSE.split(sentence):
            if len(clause.split()) > 12:
                pieces.extend(_COMMA.split(clause))
            else:
                pieces.append(clause)
    out: list[str] = []
    for piece in (p.strip(" ,;:.") for p in pieces):
        if not piece:
            continue
        if out and len(content_words(piece)) < 3:
            out[-1] = f"{out[-1]}, {piece}"
        else:
            out.append(piece)
    if len(out) > 1 and len(content_words(out[0])) < 3:
        out[1] = f"{out[0]}, {out[1]}"
        out = out[1:]
    return out[:MAX_DERIVED_KEY_POINTS]


# --- stage 1: features ------------------------------------------------------------------------


@dataclass
class _Prepared:
    question: str
    reference: str
    answer_tokens: list[Token]
    key_points: list[str]
    key_point_source: str
    truncated: bool
    spans: bool
    answer_chunks: list[str] = field(default_factory=list)
    answer_demoted_chunks: list[str] = field(default_factory=list)
    reference_demoted: str = ""
    ref_words: list[str] = field(default_factory=list)
    ans_words: list[str] = field(default_factory=list)
    answer_content_n: int = 0
    reference_content_n: int = 0
    spans_found: Spans = field(default_factory=lambda: Spans([], []))

    @property
    def no_speech(self) -> bool:
        return not self.answer_tokens

    def texts(self) -> list[str]:
        if self.no_speech:
            return []
        out = [self.reference, self.question, *self.answer_chunks, *self.answer_demoted_chunks]
        out += [self.reference_demoted, *self.ref_words, *self.ans_words]
        if self.spans and self.spans_found.spans:
            out += [*self.key_points, *self.spans_found.texts, *self.spans_found.words]
            out += [w for k in self.key_points for w in key_point_words(k)]
        return list(dict.fromkeys(t for t in out if t))


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _answer_tokens(transcript: str, words: Iterable[Any] | None) -> tuple[list[Token], bool]:
    """Timed tokens from ``words`` when given (they carry the timestamps), else the transcript."""
    out: list[Token] = []
    truncated = False
    for i, w in enumerate(words or ()):
        if i >= MAX_WORDS:
            truncated = True
            break
        if isinstance(w, Mapping):
            text = sanitize(w.get("word"), MAX_WORD_CHARS * 2)
            start, end = _float_or_none(w.get("start")), _float_or_none(w.get("end"))
        else:
            text, start, end = sanitize(w, MAX_WORD_CHARS * 2), None, None
        if _TOKEN.search(text):  # punctuation-only or empty "words" carry no speech
            out.append(Token(text, start, end))
    if not out:
        parts = transcript.split()
        truncated = truncated or len(parts) > MAX_WORDS
        out = [Token(p, None, None) for p in parts[:MAX_WORDS] if _TOKEN.search(p)]
    return out, truncated


def _chunks(words: list[str]) -> list[str]:
    return [" ".join(words[i : i + CHUNK_WORDS]) for i in range(0, len(words), CHUNK_WORDS)]


def _prepare(
    question: Any,
    reference: Any,
    key_points: Sequence[Any] | None,
    transcript: Any,
    words: Iterable[Any] | None,
    spans: bool,
) -> _Prepared:
    q = sanitize(question, MAX_QUESTION_CHARS)
    ref = sanitize(reference, MAX_REFERENCE_CHARS)
    raw_transcript = "" if transcript is None else str(transcript)
    truncated = len(raw_transcript) > MAX_TEXT_CHARS
    answer_text = sanitize(raw_transcript, MAX_TEXT_CHARS)
    toks, words_truncated = _answer_tokens(answer_text, words)
    truncated = truncated or words_truncated

    kps = [sanitize(k, MAX_KEY_POINT_CHARS) for k in (key_points or [])[:MAX_KEY_POINTS]]
    kps = [k for k in kps if _TOKEN.search(k)]
    source = "author" if kps else "none"
    if not kps:
        kps = derive_key_points(ref)
        source = "reference" if kps else "none"

    p = _Prepared(q, ref, toks, kps, source, truncated, spans)
    if p.no_speech:
        return p
    if not answer_text:  # transcript empty but words given
        answer_text = " ".join(t.text for t in toks)[:MAX_TEXT_CHARS]
    q_stems = {stem(w) for w in content_words(q)}
    ans_all = tokens(answer_text)
    p.answer_chunks = _chunks(ans_all)
    p.answer_demoted_chunks = _chunks([w for w in ans_all if stem(w) not in q_stems])
    ref_all = tokens(ref)
    p.reference_demoted = " ".join(w for w in ref_all if stem(w) not in q_stems) or " ".join(ref_all)

    ref_content = content_words(ref)
    ans_content = content_words(answer_text)
    p.reference_content_n, p.answer_content_n = len(ref_content), len(ans_content)
    # Question demotion: words the question already gives away earn nothing (Sultan et al. 2016).
    ref_words = [w for w in ref_content if stem(w) not in q_stems] or ref_content
    p.ref_words = list(dict.fromkeys(ref_words))
    p.ans_words = list(dict.fromkeys(w for w in ans_content if stem(w) not in q_stems))
    if spans and kps:
        p.spans_found = answer_spans(toks)
    return p


def texts_to_encode(
    question: Any,
    reference: Any,
    key_points: Sequence[Any] | None,
    transcript: Any,
    words: Iterable[Any] | None = None,
    *,
    spans: bool = True,
) -> list[str]:
    """The exact strings extract_features will encode (lets batch jobs pre-encode everything)."""
    return _prepare(question, reference, key_points, transcript, words, spans).texts()


def _mean_vec(vec: Mapping[str, np.ndarray], texts: list[str]) -> np.ndarray | None:
    if not texts:
        return None
    v = np.mean([vec[t] for t in texts], axis=0)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else None


def _cos(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return 0.0
    return float(np.clip(a @ b, -1.0, 1.0))


def extract_features(
    encoder: Encoder,
    question: Any,
    reference: Any,
    key_points: Sequence[Any] | None,
    transcript: Any,
    words: Iterable[Any] | None = None,
    *,
    spans: bool = True,
) -> GradeFeatures:
    """Run the model once and measure the answer (see module docstring). ``spans=False``
    skips key-point evidence (batch evaluation needs only the calibration features)."""
    p = _prepare(question, reference, key_points, transcript, words, spans)
    model_id = str(getattr(encoder, "model_id", ""))
    if p.no_speech:
        return GradeFeatures(
            no_speech=True,
            n_words=0,
            values={},
            key_points=[KeyPointEvidence(k, None, None, None, None) for k in p.key_points],
            key_point_source=p.key_point_source,
            truncated=p.truncated,
            model_id=model_id,
        )
    texts = p.texts()
    vecs = dict(zip(texts, np.asarray(encoder.encode(texts), dtype=np.float32), strict=True))

    answer_vec = _mean_vec(vecs, p.answer_chunks)
    ref_vec = vecs.get(p.reference)
    values: dict[str, float] = {
        "cos_ref": _cos(answer_vec, ref_vec),
        "cos_question": _cos(answer_vec, vecs.get(p.question)),
        "cos_ref_demoted": _cos(_mean_vec(vecs, p.answer_demoted_chunks), vecs.get(p.reference_demoted)),
    }
    values.update(_alignment(p.ref_words, p.ans_words, vecs))
    values["len_ratio"] = math.log((p.answer_content_n + 1) / (p.reference_content_n + 1))
    values["len_ratio_short"] = min(values["len_ratio"], 0.0)
    values["log_words"] = math.log1p(len(p.answer_tokens))
    values["soft_recall_sq"] = values["soft_recall"] ** 2
    values["cos_ref_sq"] = values["cos_ref"] ** 2

    evidence: list[KeyPointEvidence] = []
    if spans and p.key_points and p.spans_found.spans:
        evidence = match_key_points(p.key_points, p.answer_tokens, p.spans_found, vecs)
        values.update(coverage_values(evidence))
    values = {k: (v if math.isfinite(v) else 0.0) for k, v in values.items()}
    return GradeFeatures(
        no_speech=False,
        n_words=len(p.answer_tokens),
        values=values,
        key_points=evidence,
        key_point_source=p.key_point_source if evidence else ("none" if spans else p.key_point_source),
        truncated=p.truncated,
        model_id=model_id,
    )


def _alignment(
    ref_words: list[str], ans_words: list[str], vecs: Mapping[str, np.ndarray]
) -> dict[str, float]:
    keys = ("soft_recall", "soft_precision", "align_recall", "align_precision", "lex_recall", "lex_precision")
    if not ref_words or not ans_words:
        return dict.fromkeys(keys, 0.0)
    sim = np.stack([vecs[w] for w in ref_words]) @ np.stack([vecs[w] for w in ans_words]).T
    ref_stems = [stem(w) for w in ref_words]
    ans_stems = [stem(w) for w in ans_words]
    same = np.array([[r == a for a in ans_stems] for r in ref_stems])
    sim = np.where(same, 1.0, sim)  # same stem is a full match whatever the embedding says
    best_r, best_a = sim.max(axis=1), sim.max(axis=0)
    ans_set, ref_set = set(ans_stems), set(ref_stems)
    return {
        "soft_recall": float(best_r.mean()),
        "soft_precision": float(best_a.mean()),
        "align_recall": float((best_r >= ALIGN_THRESHOLD).mean()),
        "align_precision": float((best_a >= ALIGN_THRESHOLD).mean()),
        "lex_recall": float(np.mean([s in ans_set for s in ref_stems])),
        "lex_precision": float(np.mean([s in ref_set for s in ans_stems])),
    }


def grade(
    encoder: Encoder,
    question: Any,
    reference: Any,
    key_points: Sequence[Any] | None,
    transcript: Any,
    words: Iterable[Any] | None = None,
    options: GradeOptions | None = None,
) -> tuple[Grade, GradeFeatures]:
    """extract_features + score; returns the features too so callers can store them."""
    features = extract_features(encoder, question, reference, key_points, transcript, words)
    return score(features, options), features
