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
   - per key point, the best-matching answer span (the answer's sentences plus sliding
     windows of 8 words, half overlapping) with its similarity, text, and start/end seconds
     taken from ``words``.
2. ``score(features, options)`` is pure and fast (no model): it applies the calibration and
   thresholds in ``GradeOptions`` and returns a ``Grade``.

Score formula (0-1):
    calibrated = clip(intercept + sum_i coef_i * (x_i - mean_i) / scale_i, 0, 1)
a ridge regression onto human grades / 5 of the features named in the calibration JSON
(shipped: cos_ref, cos_ref_demoted, soft_recall, soft_precision, len_ratio, min(len_ratio, 0),
soft_recall^2), fitted on the Mohler 2011 data by ``python -m pipeline.evaluate grading --fit-out
pipeline/grading_calibration.json`` (question-disjoint 5-fold CV: pearson r 0.62, RMSE 0.87 on
0-5, vs r 0.51 for the raw cosine). Each x_i is first clipped to the range seen in that data,
so a spoken answer far longer than a written one cannot extrapolate the linear model. Then
    score = calibrated                                        if key points were derived
    score = (w_sim * calibrated + w_cov * coverage) / (w_sim + w_cov)   if the author gave them
where coverage = matched key points / key points, a key point is matched when its best
span similarity >= ``keypoint_match_threshold``, and w_sim / w_cov are
``grade_weight_similarity`` / ``grade_weight_coverage``. Bands: score < cutoffs[0] weak,
< cutoffs[1] fair, < cutoffs[2] good, else strong.

Derived key points: when the author gave none, the reference is split into sentences
(. ! ?), then at ; and :, and clauses longer than 12 words again at commas; fragments with
fewer than 3 content words are merged into the previous clause; at most 10 are kept. They
are shown as evidence (matched / missed) but not added to the score, since the calibrated
part already measures agreement with the whole reference.

Flags: ``no_speech`` (no word in the transcript: score and band are None, never a guessed
number), ``too_short`` (fewer than ``min_answer_words`` words), ``off_topic`` (cosine to
both the question and the reference below ``off_topic_similarity``; an answer that matches
the reference is not off topic even if it shares no words with the question), ``truncated``
(input was capped). Only ``off_topic`` changes the score: the calibration data has no
off-topic answers (its regression pulls them up towards the average grade), so the score
becomes min(score, max(0, raw cosine)), i.e. at most ``off_topic_similarity``.

Hostile input: every text is NFKC-normalized, HTML tags/entities and markdown markup are
removed, control characters replaced, and lengths capped (characters, words, key points;
raw input is cut before the cleaning regexes run) before any model work.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from pipeline.settings import Settings

FEATURES_VERSION = 1
DEFAULT_CALIBRATION_PATH = Path(__file__).with_name("grading_calibration.json")

# Caps: a 10-minute answer is ~1,500 words / ~9,000 characters; these leave room and bound work.
MAX_TEXT_CHARS = 20_000
MAX_REFERENCE_CHARS = 5_000
MAX_QUESTION_CHARS = 2_000
MAX_KEY_POINT_CHARS = 500
MAX_KEY_POINTS = 20
MAX_DERIVED_KEY_POINTS = 10
MAX_WORDS = 3_000
MAX_WORD_CHARS = 64
CHUNK_WORDS = 120  # MiniLM truncates at 256 word pieces; longer answers are embedded in chunks
WINDOW_SIZES = (8,)  # plus whole sentences; key points run ~5-12 words
MAX_WINDOWS_PER_SIZE = 200
ALIGN_THRESHOLD = 0.5

BANDS = ("weak", "fair", "good", "strong")

_STOPWORDS_TEXT = """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either etc few for from
    further had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours ourselves
    out over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up us very was we were what when where which
    while who whom why will with would you your yours yourself yourselves may might must shall one
    it's i'm don't doesn't isn't um uh erm er ah hmm yeah okay ok"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_TOKEN = re.compile(r"\w+(?:['’\-]\w+)*")
_HTML_TAG = re.compile(r"</?[A-Za-z!][^<>]{0,300}>")
_MD_LINK = re.compile(r"!?\[([^\[\]]{0,300})\]\([^()\s]{0,500}\)")
_MD_MARKUP = re.compile(r"[*#`~]+|_{2,}")
_WS = re.compile(r"\s+")
_SENT_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE = re.compile(r"\s*[;:]\s+")
_COMMA = re.compile(r",\s+")


class Encoder(Protocol):
    model_id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# --- text utilities --------------------------------------------------------------------------


def sanitize(text: Any, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Plain, single-spaced text: no HTML, markdown markup or control characters; capped."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    text = text[: max_chars * 4]  # bound regex work before cleaning
    text = unicodedata.normalize("NFKC", html.unescape(text))
    text = _HTML_TAG.sub(" ", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_MARKUP.sub(" ", text)
    # Drops control, format and lone-surrogate characters that break tokenizers and JSON.
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return _WS.sub(" ", text).strip()[:max_chars]


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def stem(word: str) -> str:
    """Light suffix stripping so 'simulates'/'simulating'/'simulate' meet; not a real lemmatizer."""
    for suffix, repl in (
        ("ies", "y"),
        ("sses", "ss"),
        ("ing", ""),
        ("ed", ""),
        ("ly", ""),
        ("es", ""),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + repl
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def content_words(text: str) -> list[str]:
    return [w[:MAX_WORD_CHARS] for w in tokens(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


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


# --- records ----------------------------------------------------------------------------------


@dataclass
class Token:
    text: str
    start: float | None
    end: float | None


@dataclass
class KeyPointEvidence:
    key_point: str
    best_similarity: float | None  # None only when there was no speech to compare
    span: str | None
    start: float | None
    end: float | None
    word_start: int | None = None  # index into the answer's words, inclusive
    word_end: int | None = None  # inclusive


@dataclass
class GradeFeatures:
    """Everything score() needs; plain JSON types only (MongoDB-ready)."""

    no_speech: bool
    n_words: int
    values: dict[str, float]
    key_points: list[KeyPointEvidence]
    key_point_source: str  # "author" | "reference" | "none"
    truncated: bool = False
    model_id: str = ""
    version: int = FEATURES_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradeFeatures:
        return cls(
            no_speech=bool(data["no_speech"]),
            n_words=int(data["n_words"]),
            values={str(k): float(v) for k, v in dict(data.get("values") or {}).items()},
            key_points=[KeyPointEvidence(**dict(kp)) for kp in data.get("key_points") or []],
            key_point_source=str(data.get("key_point_source", "none")),
            truncated=bool(data.get("truncated", False)),
            model_id=str(data.get("model_id", "")),
            version=int(data.get("version", FEATURES_VERSION)),
        )


@dataclass
class Grade:
    score: float | None  # 0-1; None when there was no speech
    band: str | None
    raw_cosine: float | None  # sentence cosine answer-reference, shown beside the score
    calibrated: float | None
    coverage: float | None  # only when the author gave key points
    matched: list[dict[str, Any]]
    missed: list[dict[str, Any]]
    flags: list[str]
    key_point_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Standardized linear model from features to grade/5 (see pipeline.evaluate)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    # Range seen in the calibration data; inputs are clipped to it so a spoken answer far
    # outside the training data (e.g. 10x longer) cannot extrapolate the linear model.
    lo: tuple[float, ...] = ()
    hi: tuple[float, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def predict(self, values: Mapping[str, float]) -> float:
        z = self.intercept
        n = len(self.features)
        lo = self.lo or (-math.inf,) * n
        hi = self.hi or (math.inf,) * n
        for name, mu, sd, w, a, b in zip(
            self.features, self.mean, self.scale, self.coef, lo, hi, strict=True
        ):
            x = values.get(name, mu)  # a feature missing from old records counts as average
            z += w * (min(b, max(a, x)) - mu) / sd
        return min(1.0, max(0.0, z))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "ridge",
            "target": "score_avg / 5",
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "lo": list(self.lo),
            "hi": list(self.hi),
            **dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        keys = {"model", "target", "features", "mean", "scale", "coef", "intercept", "lo", "hi"}
        cal = cls(
            features=tuple(str(f) for f in data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            coef=tuple(float(v) for v in data["coef"]),
            intercept=float(data["intercept"]),
            lo=tuple(float(v) for v in data.get("lo") or ()),
            hi=tuple(float(v) for v in data.get("hi") or ()),
            meta={k: v for k, v in data.items() if k not in keys},
        )
        n = len(cal.features)
        if not (len(cal.mean) == len(cal.scale) == len(cal.coef) == n) or any(s <= 0 for s in cal.scale):
            raise ValueError("grading calibration: features/mean/scale/coef lengths differ or scale <= 0")
        if (cal.lo or cal.hi) and not (len(cal.lo) == len(cal.hi) == n):
            raise ValueError("grading calibration: lo/hi must have one value per feature")
        return cal

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        return _load_calibration(str(Path(path).resolve()))


@lru_cache(maxsize=8)
def _load_calibration(path: str) -> Calibration:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"grading calibration not found: {path}. Refit it with "
            "`python -m pipeline.evaluate grading --data ../shared/data/grading/mohler_dataset_edited.csv "
            "--fit-out pipeline/grading_calibration.json`"
        ) from None
    return Calibration.from_dict(data)


def default_calibration() -> Calibration:
    return Calibration.load(DEFAULT_CALIBRATION_PATH)


@dataclass(frozen=True)
class GradeOptions:
    keypoint_match_threshold: float = 0.5
    weight_similarity: float = 0.5
    weight_coverage: float = 0.5
    band_cutoffs: tuple[float, float, float] = (0.4, 0.6, 0.8)
    min_answer_words: int = 8
    off_topic_similarity: float = 0.15
    calibration: Calibration = field(default_factory=default_calibration)

    @classmethod
    def from_settings(cls, s: Settings, calibration: Calibration | None = None) -> GradeOptions:
        if calibration is None:
            path = s.grading_calibration_path or DEFAULT_CALIBRATION_PATH
            calibration = Calibration.load(path)
        return cls(
            keypoint_match_threshold=s.keypoint_match_threshold,
            weight_similarity=s.grade_weight_similarity,
            weight_coverage=s.grade_weight_coverage,
            band_cutoffs=tuple(s.band_cutoffs),  # type: ignore[arg-type]
            min_answer_words=s.min_answer_words,
            off_topic_similarity=s.off_topic_similarity,
            calibration=calibration,
        )


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
    windows: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def no_speech(self) -> bool:
        return not self.answer_tokens

    def texts(self) -> list[str]:
        if self.no_speech:
            return []
        out = [self.reference, self.question, *self.answer_chunks, *self.answer_demoted_chunks]
        out += [self.reference_demoted, *self.ref_words, *self.ans_words]
        if self.spans:
            out += [*self.key_points, *(w[2] for w in self.windows)]
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


def _windows(toks: list[Token]) -> list[tuple[int, int, str]]:
    """Candidate evidence spans: sentences plus sliding windows (inclusive word indices)."""
    n = len(toks)
    spans: list[tuple[int, int]] = []
    start = 0
    for i, t in enumerate(toks):
        if t.text.endswith((".", "!", "?")) or i == n - 1:
            spans.append((start, i))
            start = i + 1
    for size in WINDOW_SIZES:
        if n <= size:
            spans.append((0, n - 1))
            continue
        stride = max(size // 2, math.ceil((n - size) / MAX_WINDOWS_PER_SIZE))
        starts = list(range(0, n - size + 1, stride))
        if starts[-1] != n - size:
            starts.append(n - size)
        spans += [(s, s + size - 1) for s in starts]
    out = []
    for a, b in dict.fromkeys(spans):
        text = " ".join(t.text for t in toks[a : b + 1])
        out.append((a, b, text))
    return out


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
        p.windows = _windows(toks)
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
    if spans and p.key_points and p.windows:
        win_mat = np.stack([vecs[w[2]] for w in p.windows])
        for kp in p.key_points:
            sims = win_mat @ vecs[kp]
            # Ties go to the shorter span: tighter evidence for the same match.
            best = max(
                range(len(p.windows)),
                key=lambda i: (round(float(sims[i]), 4), -(p.windows[i][1] - p.windows[i][0])),
            )
            a, b, text = p.windows[best]
            evidence.append(
                KeyPointEvidence(
                    key_point=kp,
                    best_similarity=float(np.clip(sims[best], -1.0, 1.0)),
                    span=text,
                    start=p.answer_tokens[a].start,
                    end=p.answer_tokens[b].end,
                    word_start=a,
                    word_end=b,
                )
            )
        values["kp_mean_best"] = float(np.mean([e.best_similarity for e in evidence]))
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


# --- stage 2: score ---------------------------------------------------------------------------


def band_for(score: float, cutoffs: Sequence[float]) -> str:
    c = sorted(cutoffs)
    for name, cut in zip(BANDS, c, strict=False):
        if score < cut:
            return name
    return BANDS[len(c)] if len(c) < len(BANDS) else BANDS[-1]


def score(features: GradeFeatures | Mapping[str, Any], options: GradeOptions | None = None) -> Grade:
    """Pure: grade stored features under ``options`` (no model, microseconds)."""
    f = features if isinstance(features, GradeFeatures) else GradeFeatures.from_dict(features)
    opt = options or GradeOptions()
    thr = opt.keypoint_match_threshold
    matched: list[dict[str, Any]] = []
    missed: list[dict[str, Any]] = []
    for e in f.key_points:
        if e.best_similarity is not None and e.best_similarity >= thr:
            matched.append(
                {
                    "key_point": e.key_point,
                    "span": e.span,
                    "start": e.start,
                    "end": e.end,
                    "similarity": e.best_similarity,
                }
            )
        else:
            missed.append({"key_point": e.key_point, "best_similarity": e.best_similarity})

    if f.no_speech:
        flags = ["no_speech"] + (["truncated"] if f.truncated else [])
        return Grade(None, None, None, None, None, [], missed, flags, f.key_point_source)

    v = f.values
    flags = []
    if f.n_words < opt.min_answer_words:
        flags.append("too_short")
    if max(v.get("cos_question", 0.0), v.get("cos_ref", 0.0)) < opt.off_topic_similarity:
        flags.append("off_topic")
    if f.truncated:
        flags.append("truncated")

    calibrated = opt.calibration.predict(v)
    coverage: float | None = None
    value = calibrated
    if f.key_point_source == "author" and f.key_points:
        coverage = len(matched) / len(f.key_points)
        total = opt.weight_similarity + opt.weight_coverage
        if total > 0:
            value = (opt.weight_similarity * calibrated + opt.weight_coverage * coverage) / total
    if "off_topic" in flags:
        # The calibration data has no off-topic answers and regresses them to its mean;
        # fall back to the measured raw cosine, which is below off_topic_similarity here.
        value = min(value, max(0.0, v.get("cos_ref", 0.0)))
    return Grade(
        score=value,
        band=band_for(value, opt.band_cutoffs),
        raw_cosine=v.get("cos_ref"),
        calibrated=calibrated,
        coverage=coverage,
        matched=matched,
        missed=missed,
        flags=flags,
        key_point_source=f.key_point_source,
    )


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
