"""User-derived text made safe to show: the one place it is escaped before a page renders it.

Streamlit renders most strings it is given as Markdown (``st.markdown``/``st.write``, the status
boxes, captions, headers, metric, expander, button and radio labels, ``help`` tooltips).
A candidate name, a session id from the URL, a custom question, a transcript or an error text
that quotes any of them must come out as the literal characters that were typed: no link, no
image, no heading or list, no LaTeX, no emoji or icon, no colour directive, no raw HTML.

``md()`` does that for Streamlit's renderer (react-markdown with remark-gfm, remark-math,
remark-directive, remark-emoji and Streamlit's own text rewrites):

- every ASCII punctuation character is backslash-escaped (CommonMark allows it for all of them),
  which stops emphasis, links, images, code, headings, lists, tables, math and directives at the
  parser; ``< > &`` become HTML entities instead, which the renderer decodes back to text;
- whitespace runs (newlines, tabs) and control characters become one space, so no line can start
  a block (indented code, list, quote) and no hard break can be smuggled in;
- some rewrites run on the *text* after parsing, where backslash escapes are already resolved:
  the GFM autolink literal (``http://``, ``https://``, ``www.``, ``a@b.c``), emoji shortcodes
  (``:smile:``), Streamlit's icons (``:material/x:``, ``:streamlit:``) and typographic arrows
  (``->``, ``--``, ``>=``). An invisible WORD JOINER (U+2060) after each ``:`` and ``@``, between
  ``www`` and its ``.``, and inside each arrow keeps those patterns from matching; what a reader
  sees is unchanged.

``plain_html()`` is the same idea for Plotly text (hover labels, tick labels, point labels),
which understands a few HTML tags (``<a href>``, ``<b>``, ``<br>``) and decodes entities.
"""

from __future__ import annotations

import html
import re
import string
import unicodedata

WORD_JOINER = "\u2060"  # invisible, no line-break opportunity; not a word or space character in JS regexes

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ESCAPED = {c: "\\" + c for c in string.punctuation if c not in _ENTITIES}
_JOIN_AFTER = (":", "@")  # scheme "://", emoji / icon shortcodes and directives; e-mail autolinks
_WWW = re.compile(r"(?<=www)(?=\.)", re.IGNORECASE)
# Streamlit turns these into arrows and dashes when they stand alone between spaces.
_TYPOGRAPHY = re.compile(r"(?<!\S)(<->|->|<-|--|>=|<=|~=)(?!\S)")


def _one_line(value: object) -> str:
    text = "" if value is None else str(value)
    # Control characters (NUL, ESC, DEL, ...) would otherwise reach the page or break lines.
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(text.split())


def md(value: object) -> str:
    """``value`` as Markdown that Streamlit renders as exactly that text, on one line.

    ``None`` is empty; anything else is ``str()``-ed. Whitespace runs collapse to one space.
    """
    text = _one_line(value)
    text = _WWW.sub(WORD_JOINER, text)
    text = _TYPOGRAPHY.sub(lambda m: m[1][0] + WORD_JOINER + m[1][1:], text)
    out: list[str] = []
    for ch in text:
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        else:
            out.append(_ESCAPED.get(ch, ch))
        if ch in _JOIN_AFTER:
            out.append(WORD_JOINER)
    return "".join(out)


def plain_html(value: object) -> str:
    """``value`` as text for Plotly (hover, tick and point labels): tags shown, not applied."""
    return html.escape("" if value is None else str(value), quote=False)
