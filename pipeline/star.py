"""STAR structure of a behavioural answer: the timed words cut into sentences, each classified as Situation /
Task / Action / Result / other (encoder similarity to part prototypes + cue features, a logistic model fitted
by ``python -m pipeline.evaluate star`` into star_model.json), then smoothed into ordered spans (Viterbi)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.encoder import SentenceEncoder

STAR_VERSION = 1
MODEL_PATH = Path(__file__).with_name("star_model.json")
LABELS = ("S", "T", "A", "R", "O")  # O = other (opinion, filler, reflection outside the story)
PARTS = ("S", "T", "A", "R")
PART_NAMES = {"S": "Situation", "T": "Task", "A": "Action", "R": "Result"}
ADVICE = {
    "S": "no Situation: start with where you were and what was going on, in a sentence or two",
    "T": "no Task: say what you were responsible for or what goal you had",
    "A": "no Action: say the steps you took yourself, with 'I'",
    "R": "no Result: say what changed, with a number if you have one",
}
# Prototype descriptions of each label; a sentence's feature is its best cosine to each label's set.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "S": ("At my last company we had a problem with the project.", "This was a few years ago when I worked there.",
          "The background was that the team was struggling and things were going wrong.",
          "Our customers were unhappy and the numbers were getting worse."),
    "T": ("My task was to fix it before the deadline.", "I was responsible for delivering the project.",
          "My goal was to get everyone to agree.", "My manager asked me to take care of it."),
    "A": ("I set up a meeting and talked to them.", "First I analysed the data, then I built a fix.",
          "I wrote a plan and shared it with the team.", "We tested both options and rolled out the change."),
    "R": ("As a result we finished on time and the client was happy.", "The number went down by thirty percent.",
          "In the end it worked and things improved.", "I learned to always check my assumptions."),
    "O": ("I think communication is really important.", "I always try to stay calm and listen.",
          "Usually I just focus on what matters most.", "I am a fast learner and a good team player."),
}


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_NUMBER_WORDS = sorted(_wordset("one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
                 "sixty seventy eighty ninety hundred thousand million billion half third quarter double doubled "
                 "tripled twice dozen tenth"))
_ONE = r"(?:\d[\d,.]*|(?:" + "|".join(_NUMBER_WORDS) + r")\b)"
_NUM = _ONE + r"(?:[\s-]+(?:point\s+)?" + _ONE + r")*(?:\s*(?:%|percent\b|per cent\b|k\b|x\b))?"
_FROM_TO = re.compile(r"\bfrom\s+(?:about\s+|around\s+)?" + _NUM + r"[^.,;]{0,40}?\bto\s+(?:about\s+|around\s+|under\s+|"
                      r"less than\s+|a\s+)?" + _NUM + r"(?:\s+of\s+a\s+percent)?", re.IGNORECASE)
_MEASURE = re.compile(r"(?<![\w])" + _NUM, re.IGNORECASE)
_MONEY = re.compile(r"[$£€]\s*\d|\b(?:dollars?|pounds?|euros?|revenue|budget)\b", re.IGNORECASE)
_TIME = re.compile(r"\b(?:minutes?|hours?|days?|weeks?|months?|quarters?|years?|early|ahead of|on time|on schedule)\b",
                   re.IGNORECASE)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_IRREGULAR_PAST = _wordset("was were had did went made took told said found gave got came saw knew thought felt "
                       "began ran wrote built sent set put kept left led spent brought chose became lost "
                       "won met paid sat spoke stood understood drove bought caught taught")
_GENERIC = _wordset("always usually generally often tend typically never whenever think believe really just")
_OUTCOME = _wordset("result results resulted end ended finally eventually outcome improved increased decreased "
                "reduced dropped saved cut grew launched shipped delivered learned learnt since now")
_TASK = re.compile(r"\b(?:my (?:job|task|role|goal|responsibility)|responsible|had to|needed to|need to|goal|"
                   r"asked me|in charge|owned|was on me|it was mine|wanted to)\b", re.IGNORECASE)
_SITUATION = re.compile(r"\b(?:when|ago|last (?:year|job|role|company|spring|quarter)|at my|in my (?:last|previous|"
                        r"first)|background|previous|this was|there was|used to)\b", re.IGNORECASE)
_I = {"i", "i'd", "i've", "i'm", "i'll"}
_WE = {"we", "we'd", "we've", "we're", "we'll"}
FEATURE_NAMES = tuple(f"sim_{lab}" for lab in LABELS) + (
    "sim_question", "position", "first", "last", "past", "generic", "i_share", "we_share", "outcome", "measure",
    "task_cue", "situation_cue", "log_words")
_SENTENCE_END = re.compile(r"[.?!]+[\"')\]]*$")


@dataclass(frozen=True)
class Sentence:
    text: str
    start: float | None  # seconds on the audio clock (the words' own times)
    end: float | None
    first: int = 0  # index of its first word in the words given to ``segment``
    stop: int = 0  # one past its last word


# A capitalised function word after a word without punctuation: the recogniser missed a full stop.
_STARTERS = _wordset("the we so then but and after first in at as it my our she he they this that when finally now "
                     "since last by once later next eventually what because also there looking long")
# After a comma, these open a new clause ("..., I was the engineer", "..., so we picked ...").
_CLAUSE = _wordset("i we she he they my our so then but first finally after afterwards eventually later next now "
                   "because which meaning")
_AND_SUBJECT = _wordset("i we she he they then so my our it that")


def _token(w: Mapping[str, Any]) -> str:
    return str(w.get("word", "")).strip()


def _clauses(words: Sequence[Mapping[str, Any]], lo: int, hi: int, min_len: int, min_part: int) -> list[int]:
    """Cut points inside words[lo:hi] at clause boundaries after a comma, for a sentence of >= ``min_len`` words."""
    if hi - lo < min_len:
        return []
    cuts, last = [], lo
    for k in range(lo + 1, hi):
        prev, tok = _token(words[k - 1]), _token(words[k]).lower().strip(",.")
        nxt = _token(words[k + 1]).lower().strip(",.") if k + 1 < hi else ""
        if prev.endswith((",", ";", ":")) and (tok in _CLAUSE or (tok == "and" and nxt in _AND_SUBJECT)) \
                and k - last >= min_part and hi - k >= min_part:
            cuts.append(k)
            last = k
    return cuts


def segment(words: Sequence[Mapping[str, Any]], pause_s: float = 1.5, max_words: int = 45,
            clause_words: int = 24, min_part: int = 5) -> list[Sentence]:
    """Sentences and clauses of the timed words. A sentence ends after sentence-final punctuation, at a pause of
    ``pause_s``, before a capitalised function word that follows a word without punctuation (a full stop the
    recogniser missed), or in a run-on at a pause or a clause word after ``max_words``. A sentence of
    ``clause_words`` or more is cut again after a comma that opens a clause ("..., so I ...", "..., and we ...")
    when both parts keep ``min_part`` words."""
    idx = [i for i, w in enumerate(words) if _token(w)]
    bounds: list[tuple[int, int]] = []  # positions in idx
    first = 0
    for pos in range(len(idx)):
        tok = _token(words[idx[pos]])
        if pos > first:
            prev = words[idx[pos - 1]]
            gap = float(words[idx[pos]].get("start") or 0.0) - float(prev.get("end") or 0.0)
            n = pos - first
            long_run = n >= max_words and (gap > 0.5 or tok.lower() in ("and", "so", "then", "but"))
            missed_stop = (n >= 4 and tok[:1].isupper() and tok.lower().strip(",.") in _STARTERS
                           and not re.search(r"[,.;:?!]$", _token(prev)))
            if (gap >= pause_s and n >= 3) or long_run or missed_stop:
                bounds.append((first, pos))
                first = pos
        if _SENTENCE_END.search(tok):
            bounds.append((first, pos + 1))
            first = pos + 1
    if first < len(idx):
        bounds.append((first, len(idx)))
    kept = [words[i] for i in idx]
    out: list[Sentence] = []
    for lo, hi in bounds:
        edges = [lo, *_clauses(kept, lo, hi, clause_words, min_part), hi]
        for a, b in zip(edges, edges[1:], strict=False):
            start, end = kept[a].get("start"), kept[b - 1].get("end")
            out.append(Sentence(" ".join(_token(w) for w in kept[a:b]), None if start is None else float(start),
                                None if end is None else float(end), idx[a], idx[b - 1] + 1))
    return out


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def measurable(text: str) -> str | None:
    """The first measurable outcome in ``text`` (a number, percent, money, a time, 'from X to Y'), else None."""
    for pattern in (_FROM_TO, _MEASURE, _MONEY, _TIME):
        m = pattern.search(text)
        if m:
            return m.group(0).strip()
    return None


def _cues(text: str) -> list[float]:
    toks = words_of(text)
    n = max(len(toks), 1)
    past = sum(t in _IRREGULAR_PAST or (len(t) > 4 and t.endswith("ed")) for t in toks)
    return [
        past / n, sum(t in _GENERIC for t in toks) / n,
        sum(t in _I or t in ("me", "my", "myself") for t in toks) / n,
        sum(t in _WE or t in ("us", "our") for t in toks) / n,
        float(sum(t in _OUTCOME for t in toks) > 0), float(measurable(text) is not None),
        float(_TASK.search(text) is not None), float(_SITUATION.search(text) is not None),
        float(np.log1p(len(toks))),
    ]


def sentence_features(encoder: SentenceEncoder, question: str, texts: Sequence[str]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) features of an answer's sentences (one encoder call, cached prototypes)."""
    protos = [p for lab in LABELS for p in PROTOTYPES[lab]]
    vecs = encoder.encode([*protos, question, *texts])
    p_vecs, q_vec, s_vecs = vecs[: len(protos)], vecs[len(protos)], vecs[len(protos) + 1:]
    sims = s_vecs @ p_vecs.T
    cols, k = [], 0
    for lab in LABELS:
        m = len(PROTOTYPES[lab])
        cols.append(sims[:, k: k + m].max(axis=1))
        k += m
    n = len(texts)
    rows = []
    for i, text in enumerate(texts):
        pos = i / (n - 1) if n > 1 else 0.5
        rows.append([float(s_vecs[i] @ q_vec), pos, float(i == 0), float(i == n - 1), *_cues(text)])
    return np.column_stack([np.column_stack(cols), np.asarray(rows, dtype=np.float64).reshape(n, -1)])


@dataclass(frozen=True)
class StarModel:
    """Multinomial logistic model on standardized features plus the label-transition log-probabilities."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (labels, features)
    intercept: np.ndarray
    log_start: np.ndarray  # (labels,)
    log_trans: np.ndarray  # (labels, labels): from row to column

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out

    def decode(self, probs: np.ndarray) -> list[int]:
        """Most likely label sequence (Viterbi) under the emission probabilities and the transitions."""
        n = len(probs)
        if n == 0:
            return []
        emit = np.log(np.clip(probs, 1e-9, 1.0))
        score = self.log_start + emit[0]
        back = np.zeros((n, len(LABELS)), dtype=int)
        for i in range(1, n):
            cand = score[:, None] + self.log_trans
            back[i] = cand.argmax(axis=0)
            score = cand.max(axis=0) + emit[i]
        path = [int(score.argmax())]
        for i in range(n - 1, 0, -1):
            path.append(int(back[i][path[-1]]))
        return path[::-1]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(LABELS), "features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "log_start": self.log_start.tolist(), "log_trans": self.log_trans.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StarModel:
        if tuple(d.get("labels") or ()) != LABELS or tuple(d.get("features") or ()) != FEATURE_NAMES:
            raise ValueError("STAR model was fitted on other labels or features: refit with "
                             "python -m pipeline.evaluate star --fit-out pipeline/star_model.json")
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept", "log_start",
                                                               "log_trans")}
        return cls(FEATURE_NAMES, arr["mean"], arr["scale"], arr["coef"], arr["intercept"], arr["log_start"],
                   arr["log_trans"])


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_PATH) -> StarModel:
    return StarModel.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


_BEHAVIOURAL_PROMPT = re.compile(
    r"\b(?:tell me about a time|tell me about (?:some|a) (?:critical )?(?:feedback|decision|situation|mistake|"
    r"conflict|project)|describe a (?:time|situation)|give (?:me )?an example of (?:a|when)|walk me through a time|"
    r"have you ever|share an example|a time (?:when )?you)\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _shipped_types() -> dict[str, str]:
    from pipeline.questions import load_builtin_sets

    return {" ".join(q.question.lower().split()): q.type for s in load_builtin_sets() for q in s.questions}


def is_behavioural(question: str, question_type: str | None = None) -> bool:
    """A behavioural question: its set says so (``type``), a shipped question's type, or (custom questions)
    the usual behavioural prompt ("Tell me about a time ...", "Describe a situation ...")."""
    if question_type and question_type != "custom":
        return question_type == "behavioural"
    shipped = _shipped_types().get(" ".join(str(question).lower().split()))
    if shipped is not None:
        return shipped == "behavioural"
    return _BEHAVIOURAL_PROMPT.search(str(question)) is not None


def label_sentences(encoder: SentenceEncoder, question: str, texts: Sequence[str],
                    model: StarModel | None = None) -> tuple[list[str], np.ndarray]:
    """Each sentence's label after smoothing, and the classifier's (n, 5) probabilities."""
    if not texts:
        return [], np.zeros((0, len(LABELS)))
    m = model or load_model()
    probs = m.probabilities(sentence_features(encoder, question, texts))
    return [LABELS[i] for i in m.decode(probs)], probs


def analyse_star(encoder: SentenceEncoder, question: str, words: Sequence[Mapping[str, Any]],
                 model: StarModel | None = None, pause_s: float = 1.5) -> dict[str, Any]:
    """STAR evidence of one answer (JSON-able, times on the words' clock): per part present, spans, text,
    start/end, confidence (present: mean probability of its sentences; absent: 1 - the highest probability any
    sentence had for it); the Result's measurable outcome; 'I' vs 'we' in the Action; order and advice."""
    sentences = segment(words, pause_s)
    labels, probs = label_sentences(encoder, question, [s.text for s in sentences], model)
    parts: dict[str, Any] = {}
    for j, part in enumerate(PARTS):
        idx = [i for i, lab in enumerate(labels) if lab == part]
        spans: list[dict[str, Any]] = []
        for i in idx:
            s = sentences[i]
            if spans and spans[-1]["last"] == i - 1:
                spans[-1].update(end=s.end, text=spans[-1]["text"] + " " + s.text, last=i)
            else:
                spans.append({"start": s.start, "end": s.end, "text": s.text, "first": i, "last": i})
        conf = float(probs[idx, j].mean()) if idx else float(1.0 - probs[:, j].max()) if len(probs) else None
        parts[part] = {
            "name": PART_NAMES[part], "present": bool(idx), "confidence": None if conf is None else round(conf, 3),
            "text": " ".join(sentences[i].text for i in idx),
            "start": spans[0]["start"] if spans else None, "end": spans[-1]["end"] if spans else None,
            "spans": [{"start": sp["start"], "end": sp["end"], "text": sp["text"]} for sp in spans],
            "sentences": idx,
        }
    order = [lab for k, lab in enumerate(labels) if lab in PARTS and lab not in labels[:k]]
    action_words = words_of(parts["A"]["text"])
    result_measure = measurable(parts["R"]["text"]) if parts["R"]["present"] else None
    return {
        "version": STAR_VERSION,
        "sentences": [{"text": s.text, "start": s.start, "end": s.end, "label": lab,
                       "confidence": round(float(probs[i, LABELS.index(lab)]), 3)}
                      for i, (s, lab) in enumerate(zip(sentences, labels, strict=True))],
        "parts": parts,
        "order": order,
        "in_order": order == [p for p in PARTS if p in order],
        "result_measurable": result_measure is not None if parts["R"]["present"] else None,
        "result_measure": result_measure,
        "action_i": sum(t in _I for t in action_words) if parts["A"]["present"] else None,
        "action_we": sum(t in _WE for t in action_words) if parts["A"]["present"] else None,
    }


def star_for_answer(encoder: SentenceEncoder, question: str, words: Sequence[Mapping[str, Any]] | None,
                    question_type: str | None = None, pause_s: float = 1.5) -> dict[str, Any] | None:
    """What the speech worker stores under ``star``: None for a question that is not behavioural; for a
    behavioural one without words, ``{"missing": <why>}`` (nothing is invented)."""
    if not is_behavioural(question, question_type):
        return None
    if not [w for w in (words or []) if str(w.get("word", "")).strip()]:
        return {"version": STAR_VERSION, "missing": "No transcript: no STAR structure."}
    try:
        model = load_model()
    except (OSError, ValueError) as e:  # a missing or stale model file: say so, keep the rest of the answer
        return {"version": STAR_VERSION, "missing": f"STAR structure not analysed: {e}"}
    return analyse_star(encoder, question, words or [], model, pause_s)


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def star_advice(star: Mapping[str, Any]) -> list[str]:
    """The advice lines of a stored STAR analysis: missing parts, order, measurable Result, 'I' vs 'we'."""
    parts = star.get("parts") or {}
    out = [ADVICE[p] + "." for p in PARTS if not (parts.get(p) or {}).get("present")]
    order = list(star.get("order") or [])
    if len(order) >= 2 and not star.get("in_order", True):
        out.append("The parts come in the order " + ", ".join(PART_NAMES[p] for p in order)
                   + ": tell it as Situation, Task, Action, Result so the listener can follow.")
    if star.get("result_measurable") is False:
        out.append("The Result has no measurable outcome: add a number (a percent, time, money, 'from X to Y') "
                   "if you have one.")
    i_count, we_count = star.get("action_i"), star.get("action_we")
    if isinstance(i_count, int) and isinstance(we_count, int) and we_count > i_count:
        out.append(f"Action says 'we' {_times(we_count)} and 'I' {_times(i_count) if i_count else 'never'}: "
                   "say what you did.")
    return out


def star_summary_lines(star: Mapping[str, Any] | None) -> list[str]:
    """Plain lines of a STAR analysis for the command line: each part with its times, then the advice."""
    if not star:
        return []
    if "parts" not in star:
        return [f"STAR: {star.get('missing') or 'not analysed'}"]
    out = []
    for key in PARTS:
        p = star["parts"].get(key) or {}
        if p.get("present"):
            out.append(f"STAR {PART_NAMES[key]} {p['start']:.1f}-{p['end']:.1f} s (confidence {p['confidence']:.2f}): "
                       f"{p['text'][:160]}")
        else:
            out.append(f"STAR {PART_NAMES[key]}: missing (confidence {p.get('confidence') or 0:.2f})")
    measure = f", measurable: {star['result_measure']!r}" if star.get("result_measure") else ""
    out.append(f"STAR order {'-'.join(star.get('order') or [])}; Action 'I' x{star.get('action_i')}, "
               f"'we' x{star.get('action_we')}{measure}")
    return out + [f"STAR advice: {line}" for line in star_advice(star)]
