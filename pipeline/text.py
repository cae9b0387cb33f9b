"""Text cleaning shared by the grader and the question sets (one set of HTML / markdown-link
regexes, NFKC, control characters, caps), plus the grader's word utilities (tokens, stem)."""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

_SCRIPT = re.compile(r"<(script|style)\b[^<>]{0,300}>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"</?[A-Za-z!][^<>]{0,300}>")
# Markdown links and images are reduced to their text. Link text may hold one level of brackets.
_LINK_TEXT = r"((?:[^\[\]]|\[[^\[\]]{0,300}\]){0,300})"
# [text](url), ![alt](url "title"), [go]( url ): the destination may hold spaces, quotes and
# one level of parentheses (javascript:alert(1)); the two alternatives never overlap (no backtracking blow-up).
MD_LINK = re.compile(r"!?\[" + _LINK_TEXT + r"\]\((?:[^()]|\([^()]{0,200}\)){0,1000}\)")
# Reference style: [text][ref], [text][] (kept as text) and the definition [ref]: url "title" (dropped:
# markdown never shows it). As in CommonMark, [text][ref] is a link only when ``ref`` (for [text][],
# ``text``) is defined, so code such as ``a[2][4]`` or ``blah[][]`` is left alone.
MD_REF_LINK = re.compile(r"!?\[" + _LINK_TEXT + r"\][ \t]?\[([^\[\]]{0,300})\]")
MD_REF_DEF = re.compile(
    r"\[([^\[\]]{1,300})\]:[ \t]*\S+(?:[ \t]+(?:\"[^\"\n]{0,300}\"|'[^'\n]{0,300}'|\([^()\n]{0,300}\)))?"
)
TOKEN = re.compile(r"\w+(?:['’\-]\w+)*")  # a word, with inner apostrophes / hyphens
MAX_WORD_CHARS = 64
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
_MD_MARKUP = re.compile(r"[*#`~]+|_{2,}")
_WS = re.compile(r"\s+")


def _label(text: str) -> str:
    """A reference label as markdown matches it: case-folded, inner whitespace collapsed."""
    return _WS.sub(" ", text).strip().casefold()


def strip_markup(text: str, max_chars: int, *, emphasis: bool = False) -> str:
    """Plain, single-spaced text capped at ``max_chars``: entities decoded, NFKC, no script/style
    blocks, HTML tags, markdown links or control characters (``emphasis``: also ``* # ` ~ __``)."""
    text = text[: max_chars * 4]  # bound the work on huge input before any regex runs
    text = unicodedata.normalize("NFKC", html.unescape(text))
    text = _SCRIPT.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    defined = {_label(m.group(1)) for m in MD_REF_DEF.finditer(text)}

    def ref_link(m: re.Match[str]) -> str:
        return m.group(1) if _label(m.group(2) or m.group(1)) in defined else m.group(0)

    for _ in range(3):  # an image inside a link's text: [![img](a)](b)
        stripped = MD_REF_DEF.sub(" ", MD_REF_LINK.sub(ref_link, MD_LINK.sub(r"\1", text)))
        if stripped == text:
            break
        text = stripped
    if emphasis:
        text = _MD_MARKUP.sub(" ", text)
    # Control, format and lone-surrogate characters break tokenizers, JSON and the display.
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return _WS.sub(" ", text).strip()[:max_chars]


def clean_text(value: Any, max_chars: int, *, field: str = "text") -> str:
    """Plain single-spaced text: no HTML tags, markdown links or control characters; capped.

    ``None`` is empty text; anything that is not a string (a dict such as ``{"$gt": ""}``,
    a number) is refused with ``ValueError``. Text that merely *looks* like a query operator
    ("$where") is kept: it is only ever stored as a string value, never as a key or a filter.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text, not {type(value).__name__}")
    return strip_markup(value, max_chars).rstrip()


def sanitize(text: Any, max_chars: int) -> str:
    """The grader's cleaning: any value as text (``None`` is empty, others via ``str``), with
    markdown emphasis removed too, since it carries no meaning for the sentence model."""
    if text is None:
        return ""
    return strip_markup(text if isinstance(text, str) else str(text), max_chars, emphasis=True)


# --- words ---------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


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


def quoted(text: str, max_chars: int = 60) -> str:
    """'text' on one line for advice, cut with an ellipsis past ``max_chars``."""
    s = " ".join(str(text).split())
    return f"'{s if len(s) <= max_chars else s[: max_chars - 1] + '…'}'"
