"""Key-point coverage: each key point against answer spans at several granularities (sentences,
sentence pairs, clauses, word windows) by sentence cosine and word-level soft alignment of its
content words; the features feed the calibrated "covered" model (``pipeline.grading_score``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.grading_features import KeyPointEvidence, Token
from pipeline.text import content_words, stem, tokens

WINDOW_SIZES = (8,)  # words, half overlapping; key points run ~5-12 words (6+12 doubled the encode time)
MAX_WINDOWS_PER_SIZE = 150
MAX_SENTENCE_WORDS = 40  # longer sentences and pairs (run-on ASR text) are left to clauses and windows
ALIGN_THRESHOLD = 0.5  # a key-point word counts as said when its best span word is this similar
MIN_CLAUSE_WORDS = 3
# A new clause starts at , ; : or before one of these words (when both sides keep >= 3 words).
CLAUSE_WORDS = frozenset(
    ["and", "but", "so", "then", "because", "which", "while", "when", "after", "before", "until", "although", "though", "whereas", "instead"]
)
# The features of one key point, in the order the calibration JSON names them.
DEFAULT_KEYPOINT_MODEL_PATH = Path(__file__).with_name("keypoint_calibration.json")
FEATURES = ("kp_cos", "kp_soft", "kp_cos_max", "kp_soft_max", "kp_soft_min", "kp_neg_mismatch")
# Negation is a stopword to the aligner and nearly invisible to sentence cosine; a span whose
# polarity differs from the key point's ("did not go to plan" / "went to plan") rarely covers it.
NEGATIONS = frozenset(
    ["not", "no", "never", "nothing", "none", "nobody", "neither", "nor", "without", "cannot", "hardly"]
)


@dataclass
class Spans:
    """Candidate evidence spans of one answer (inclusive word indices) and each token's content words."""

    spans: list[tuple[int, int, str]]
    token_words: list[list[str]]  # content words of each answer token (usually 0 or 1)
    # A sentence pair is not encoded: its vector is the normalized sum of its two sentences'
    # (close to MiniLM's mean pooling, and it saves a third of the encoding time).
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        """The span texts to encode (every span but the sentence pairs)."""
        return [s[2] for s in self.spans if s[2] not in self.pairs]

    @property
    def words(self) -> list[str]:
        return list(dict.fromkeys(w for ws in self.token_words for w in ws))


def _sentences(toks: Sequence[Token]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = 0
    for i, t in enumerate(toks):
        if t.text.endswith((".", "!", "?")) or i == len(toks) - 1:
            out.append((start, i))
            start = i + 1
    return out


def _clauses(toks: Sequence[Token], a: int, b: int) -> list[tuple[int, int]]:
    cuts = [a]
    for i in range(a + 1, b + 1):
        prev = toks[i - 1].text
        word = toks[i].text.lower().strip(" ,;:.!?\"'")
        boundary = prev.endswith((",", ";", ":")) or word in CLAUSE_WORDS
        if boundary and i - cuts[-1] >= MIN_CLAUSE_WORDS and b + 1 - i >= MIN_CLAUSE_WORDS:
            cuts.append(i)
    ends = [*cuts[1:], b + 1]
    return [(s, e - 1) for s, e in zip(cuts, ends, strict=True)]


def _windows(n: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for size in WINDOW_SIZES:
        if n <= size:
            out.append((0, n - 1))
            continue
        stride = max(size // 2, math.ceil((n - size) / MAX_WINDOWS_PER_SIZE))
        starts = list(range(0, n - size + 1, stride))
        if starts[-1] != n - size:
            starts.append(n - size)
        out += [(s, s + size - 1) for s in starts]
    return out


def answer_spans(toks: Sequence[Token]) -> Spans:
    """Sentences, pairs of consecutive sentences, clauses and sliding word windows."""
    n = len(toks)
    if n == 0:
        return Spans([], [])
    def text(a: int, b: int) -> str:
        return " ".join(t.text for t in toks[a : b + 1])

    sentences = [s for s in _sentences(toks) if s[1] - s[0] < MAX_SENTENCE_WORDS]
    spans = list(sentences)
    pairs: dict[str, tuple[str, str]] = {}
    for s, t in zip(sentences, sentences[1:], strict=False):
        if t[0] == s[1] + 1:
            spans.append((s[0], t[1]))
            pairs[text(s[0], t[1])] = (text(*s), text(*t))
    for a, b in _sentences(toks):
        spans += _clauses(toks, a, b)
    spans += _windows(n)
    out = [(a, b, text(a, b)) for a, b in dict.fromkeys(spans)]
    encoded = {t for a, b, t in out if (a, b) in set(sentences) or t not in pairs}
    return Spans(out, [content_words(t.text) for t in toks], {k: v for k, v in pairs.items() if k not in encoded})


def negated(text: str) -> bool:
    """Whether ``text`` contains a negation word (not, never, without, ...n't)."""
    return any(w in NEGATIONS or w.endswith(("n't", "n’t")) for w in tokens(text))


def key_point_words(key_point: str) -> list[str]:
    """The key point's distinct content words (what soft alignment must find in a span)."""
    return list(dict.fromkeys(content_words(key_point)))


def _stems_equal(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    sa, sb = [stem(w) for w in a], [stem(w) for w in b]
    return np.array([[x == y for y in sb] for x in sa], dtype=bool).reshape(len(sa), len(sb))


def _span_vec(text: str, spans: Spans, vecs: Mapping[str, np.ndarray]) -> np.ndarray:
    if text not in spans.pairs:
        return vecs[text]
    v: np.ndarray = vecs[spans.pairs[text][0]] + vecs[spans.pairs[text][1]]
    n = float(np.linalg.norm(v))
    out: np.ndarray = v / n if n > 0 else v
    return out


def match_key_points(
    key_points: Sequence[str],
    toks: Sequence[Token],
    spans: Spans,
    vecs: Mapping[str, np.ndarray],
) -> list[KeyPointEvidence]:
    """Best span and coverage features per key point; ``vecs`` holds the embedding of every key
    point, span text, key-point word and answer word (``texts_to_encode`` lists them)."""
    if not spans.spans:
        return [KeyPointEvidence(k, None, None, None, None) for k in key_points]
    span_mat = np.stack([_span_vec(t, spans, vecs) for _, _, t in spans.spans])
    ans_words = spans.words
    col = {w: i for i, w in enumerate(ans_words)}
    ans_mat = np.stack([vecs[w] for w in ans_words]) if ans_words else np.zeros((0, span_mat.shape[1]))
    # Columns (answer-word indices) inside each span.
    span_cols = [
        sorted({col[w] for ws in spans.token_words[a : b + 1] for w in ws}) for a, b, _ in spans.spans
    ]
    out: list[KeyPointEvidence] = []
    for kp in key_points:
        cos = np.clip(span_mat @ vecs[kp], -1.0, 1.0)
        kw = key_point_words(kp)
        if kw and ans_words:
            sim = np.stack([vecs[w] for w in kw]) @ ans_mat.T
            same = _stems_equal(kw, ans_words)
            sim = np.where(same, 1.0, sim)
            best_words = [sim[:, c].max(axis=1) if c else np.zeros(len(kw)) for c in span_cols]
            soft = np.array([float(b.mean()) for b in best_words])
            lex = np.array([float(same[:, c].any(axis=1).mean()) if c else 0.0 for c in span_cols])
        else:
            best_words = [np.zeros(len(kw)) for _ in span_cols]
            soft = np.zeros(len(spans.spans))
            lex = np.zeros(len(spans.spans))
        combo = cos + soft
        # Ties go to the shorter span: tighter evidence for the same match.
        best = max(
            range(len(spans.spans)),
            key=lambda i: (round(float(combo[i]), 4), -(spans.spans[i][1] - spans.spans[i][0])),
        )
        a, b, text = spans.spans[best]
        feats = {
            "kp_cos": float(cos[best]),
            "kp_soft": float(soft[best]),
            "kp_cos_max": float(cos.max()),
            "kp_soft_max": float(soft.max()),
            "kp_lex": float(lex[best]),
            "kp_soft_min": float(best_words[best].min()) if len(kw) else 0.0,
            "kp_neg_mismatch": float(negated(kp) != negated(text)),
        }
        unsaid = [w for w, s in zip(kw, best_words[best], strict=True) if s < ALIGN_THRESHOLD]
        out.append(
            KeyPointEvidence(
                key_point=kp,
                best_similarity=float(cos[best]),
                span=text,
                start=toks[a].start,
                end=toks[b].end,
                word_start=a,
                word_end=b,
                features={k: (v if math.isfinite(v) else 0.0) for k, v in feats.items()},
                unsaid=unsaid,
            )
        )
    return out


def coverage_values(evidence: Sequence[KeyPointEvidence]) -> dict[str, float]:
    """Answer-level means of the key points' features (grade calibration features; with derived
    key points they measure how much of the reference, piece by piece, the answer says)."""
    feats = [e.features for e in evidence if e.features]
    if not feats:
        return {}
    return {
        "kp_mean_best": float(np.mean([f["kp_cos"] for f in feats])),
        "kp_soft_mean": float(np.mean([f["kp_soft"] for f in feats])),
        "kp_soft_max_mean": float(np.mean([f["kp_soft_max"] for f in feats])),
        "kp_lex_mean": float(np.mean([f["kp_lex"] for f in feats])),
    }


@dataclass(frozen=True)
class KeypointModel:
    """Standardized logistic model P(covered | key-point features), loaded from its JSON."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def probability(self, values: Mapping[str, float]) -> float:
        z = self.intercept
        for name, mu, sd, w in zip(self.features, self.mean, self.scale, self.coef, strict=True):
            z += w * (float(values.get(name, mu)) - mu) / sd
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "logistic",
            "target": "key point covered",
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            **dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeypointModel:
        keys = {"model", "target", "features", "mean", "scale", "coef", "intercept"}
        m = cls(
            features=tuple(str(f) for f in data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            coef=tuple(float(v) for v in data["coef"]),
            intercept=float(data["intercept"]),
            meta={k: v for k, v in data.items() if k not in keys},
        )
        if not (len(m.mean) == len(m.scale) == len(m.coef) == len(m.features)) or any(s <= 0 for s in m.scale):
            raise ValueError("key-point model: features/mean/scale/coef lengths differ or scale <= 0")
        return m

    @classmethod
    def load(cls, path: Path | str) -> KeypointModel:
        return _load_model(str(Path(path).resolve()))


@lru_cache(maxsize=8)
def _load_model(path: str) -> KeypointModel:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"key-point model not found: {path}. Refit it with "
            "`python -m pipeline.evaluate keypoints --fit-out pipeline/keypoint_calibration.json`"
        ) from None
    return KeypointModel.from_dict(data)


def default_keypoint_model() -> KeypointModel:
    return KeypointModel.load(DEFAULT_KEYPOINT_MODEL_PATH)
