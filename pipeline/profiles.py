"""Named, versioned threshold profiles (the Research page's saved settings).

A profile is a set of values for the editable thresholds in ``THRESHOLD_FIELDS``, stored
in the ``profiles`` collection as ``{_id, name, version, thresholds, author, created_at}``.
Every save of a name adds a new version (1, 2, ...); nothing is overwritten, so a session
re-scored with ``(name, version)`` can always be traced back to the exact values.

Values are validated through the ``Settings`` model's own field definitions (types and
ranges: ``ge``/``le``/``gt``), plus a few cross-field rules the form cannot express
(band cut-offs ascending within 0-1, slow pace below fast pace, weights not both zero).
A bad value raises ``ProfileError`` naming the field; nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from pipeline.schemas import validate
from pipeline.settings import Settings, setting_field
from pipeline.storage import Db

# The thresholds a researcher may edit, in the order the Research page lists them.
THRESHOLD_FIELDS: tuple[str, ...] = (
    "frame_sample_every",
    "face_confidence_floor",
    "emotion_confidence_floor",
    "emotion_smoothing_window",
    "pause_seconds",
    "filler_words",
    "pace_low_wpm",
    "pace_high_wpm",
    "grade_weight_similarity",
    "grade_weight_coverage",
    "band_cutoffs",
    "keypoint_match_threshold",
    "min_answer_words",
    "off_topic_similarity",
    "eye_contact_good",
    "framing_offset_hint",
    "framing_small_face",
    "gaze_away_min_seconds",
)
# Which thresholds re-scoring stored answers can apply (the others act at capture time).
GRADING_FIELDS = (
    "grade_weight_similarity",
    "grade_weight_coverage",
    "band_cutoffs",
    "keypoint_match_threshold",
    "min_answer_words",
    "off_topic_similarity",
)
SPEECH_FIELDS = ("filler_words", "pause_seconds", "pace_low_wpm", "pace_high_wpm")
# Thresholds of the report's advice only: applied whenever a report is drawn, nothing stored to re-score.
REPORT_FIELDS = ("eye_contact_good", "framing_offset_hint", "framing_small_face", "gaze_away_min_seconds")
CAPTURE_FIELDS = tuple(f for f in THRESHOLD_FIELDS if f not in GRADING_FIELDS + SPEECH_FIELDS + REPORT_FIELDS)

MAX_NAME_CHARS = 100
MAX_FILLERS = 100
MAX_FILLER_CHARS = 40


class ProfileError(ValueError):
    """A profile or threshold value was refused; the message names the field."""


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    info = setting_field(name)
    annotation: Any = info.annotation  # a field's type, as pydantic read it
    if not info.metadata:
        return TypeAdapter(annotation)
    constrained: Any = Annotated[annotation, *info.metadata]
    return TypeAdapter(constrained)


def describe(name: str) -> str:
    """The field's one-line meaning from pipeline.settings."""
    return setting_field(name).description or ""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = "".join(f"[{p}]" for p in err.get("loc", ()))
    return f"{where} {err['msg']}".strip()


def validate_thresholds(thresholds: Mapping[str, Any], base: Settings | None = None) -> dict[str, Any]:
    """Checked, typed copy of ``thresholds`` (tuples where Settings has tuples).

    Unknown names and values outside the Settings ranges raise ProfileError naming the field.
    Cross-field rules are checked on ``base`` (default: Settings defaults) updated with them.
    """
    if not isinstance(thresholds, Mapping):
        raise ProfileError("thresholds must be a mapping of setting name to value")
    out: dict[str, Any] = {}
    for name, value in thresholds.items():
        if name not in THRESHOLD_FIELDS:
            raise ProfileError(
                f"{name!r} is not an editable threshold; editable: {', '.join(THRESHOLD_FIELDS)}"
            )
        if isinstance(value, bool) and setting_field(name).annotation is not bool:
            raise ProfileError(f"{name}: expected a number, got {value!r}")
        try:
            checked = _adapter(name).validate_python(value)
        except ValidationError as exc:
            raise ProfileError(f"{name}: {_first_error(exc)} (got {value!r})") from None
        if name == "filler_words":
            checked = _clean_fillers(checked)
        out[name] = checked
    merged = {n: base.value(n) if base is not None else setting_field(n).default for n in THRESHOLD_FIELDS}
    merged.update(out)
    cuts = tuple(merged["band_cutoffs"])
    if any(not 0.0 <= c <= 1.0 for c in cuts) or list(cuts) != sorted(cuts):
        raise ProfileError(f"band_cutoffs: must be ascending values between 0 and 1 (got {list(cuts)})")
    if merged["pace_low_wpm"] >= merged["pace_high_wpm"]:
        raise ProfileError(
            f"pace_low_wpm: must be below pace_high_wpm ({merged['pace_low_wpm']} >= {merged['pace_high_wpm']})"
        )
    if merged["grade_weight_similarity"] + merged["grade_weight_coverage"] <= 0:
        raise ProfileError("grade_weight_similarity: the two grade weights cannot both be 0")
    return out


def _clean_fillers(words: tuple[str, ...]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(" ".join(w.lower().split()) for w in words if w and w.strip()))
    if len(cleaned) > MAX_FILLERS:
        raise ProfileError(f"filler_words: at most {MAX_FILLERS} entries (got {len(cleaned)})")
    long = [w for w in cleaned if len(w) > MAX_FILLER_CHARS]
    if long:
        raise ProfileError(f"filler_words: entries are at most {MAX_FILLER_CHARS} characters ({long[0][:50]!r})")
    return cleaned


def thresholds_of(settings: Settings) -> dict[str, Any]:
    """The current value of every editable threshold."""
    return {name: settings.value(name) for name in THRESHOLD_FIELDS}


def settings_with(settings: Settings, thresholds: Mapping[str, Any]) -> Settings:
    """A copy of ``settings`` with ``thresholds`` applied (validated first)."""
    return settings.with_values(validate_thresholds(thresholds, settings))


def _jsonable(thresholds: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in thresholds.items()}


def _clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ProfileError("name: a profile needs a name")
    cleaned = " ".join(name.split())
    if len(cleaned) > MAX_NAME_CHARS:
        raise ProfileError(f"name: at most {MAX_NAME_CHARS} characters")
    return cleaned


def save_profile(db: Db, name: str, thresholds: Mapping[str, Any], author: str | None = None) -> int:
    """Store ``thresholds`` as the next version of profile ``name``; returns that version."""
    name = _clean_name(name)
    checked = validate_thresholds(thresholds)
    if not checked:
        raise ProfileError("thresholds: a profile needs at least one threshold")
    for _ in range(20):  # a concurrent save of the same name takes the version: take the next
        latest = db.profiles.find_one({"name": name}, {"version": 1}, sort=[("version", DESCENDING)])
        version = int(latest["version"]) + 1 if latest else 1
        doc = {
            "_id": f"{name}@v{version}",
            "name": name,
            "version": version,
            "thresholds": _jsonable(checked),
            "created_at": datetime.now(UTC),
            "author": (author or None) and str(author)[:200],
        }
        validate("profiles", doc)
        try:
            db.profiles.insert_one(doc)
        except DuplicateKeyError:
            continue
        return version
    raise ProfileError(f"name: could not allocate a new version of {name!r} (too many concurrent saves)")


def load_profile(db: Db, name: str, version: int | None = None) -> dict[str, Any] | None:
    """Profile ``name`` at ``version`` (default: the latest), thresholds typed; None if absent."""
    query: dict[str, Any] = {"name": str(name)}
    if version is not None:
        query["version"] = int(version)
    doc = db.profiles.find_one(query, sort=[("version", DESCENDING)])
    if doc is None:
        return None
    return {
        "name": doc["name"],
        "version": int(doc["version"]),
        "thresholds": validate_thresholds(doc.get("thresholds") or {}),
        "author": doc.get("author"),
        "created_at": doc.get("created_at"),
    }


def list_profiles(db: Db) -> list[dict[str, Any]]:
    """Every stored version, by name then newest first (index by_name_version)."""
    cursor = db.profiles.find({}, {"_id": 0, "name": 1, "version": 1, "author": 1, "created_at": 1, "thresholds": 1})
    return list(cursor.sort([("name", ASCENDING), ("version", DESCENDING)]))


# --------------------------------------------------------------------------- form description


@dataclass(frozen=True)
class ThresholdSpec:
    """How the Research page shows one threshold: widget kind, bounds, current value, help."""

    name: str
    kind: str  # "int" | "float" | "words" (a list of phrases) | "cutoffs" (three ascending numbers)
    value: Any
    help: str
    min_value: float | None = None
    max_value: float | None = None
    group: str = ""  # "capture" | "speech" | "grading" | "report"


def _bounds(name: str) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in setting_field(name).metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
    return lo, hi


def threshold_specs(settings: Settings, values: Mapping[str, Any] | None = None) -> list[ThresholdSpec]:
    """One spec per editable threshold, valued from ``values`` (e.g. a loaded profile) over ``settings``."""
    out = []
    for name in THRESHOLD_FIELDS:
        annotation = setting_field(name).annotation
        value = (values or {}).get(name, settings.value(name))
        if name == "filler_words":
            kind, value = "words", tuple(value)
        elif name == "band_cutoffs":
            kind, value = "cutoffs", tuple(float(v) for v in value)
        elif annotation is int:
            kind, value = "int", int(value)
        else:
            kind, value = "float", float(value)
        lo, hi = _bounds(name)
        if kind == "cutoffs":
            lo, hi = 0.0, 1.0
        group = ("grading" if name in GRADING_FIELDS else "speech" if name in SPEECH_FIELDS
                 else "report" if name in REPORT_FIELDS else "capture")
        out.append(ThresholdSpec(name, kind, value, describe(name), lo, hi, group))
    return out


def parse_words(text: str) -> tuple[str, ...]:
    """Filler phrases from the form: one per comma or line ("um, uh, you know")."""
    return tuple(p.strip() for p in str(text).replace("\n", ",").split(",") if p.strip())
