"""The grader's stored record: ``GradeFeatures`` (values, key-point evidence) and its parts;
plain JSON-able dataclasses, no model code, so re-scoring can load them cheaply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

FEATURES_VERSION = 2  # 2: key-point evidence features (pipeline.keypoints)


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
    # Coverage features of the best span (pipeline.keypoints.FEATURES); None in records before them.
    features: dict[str, float] | None = None
    unsaid: list[str] | None = None  # key-point content words with no similar word in the best span


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
            key_points=[
                KeyPointEvidence(**{k: v for k, v in dict(kp).items() if k in _EVIDENCE_FIELDS})
                for kp in data.get("key_points") or []
            ],
            key_point_source=str(data.get("key_point_source", "none")),
            truncated=bool(data.get("truncated", False)),
            model_id=str(data.get("model_id", "")),
            version=int(data.get("version", FEATURES_VERSION)),
        )


_EVIDENCE_FIELDS = frozenset(f.name for f in fields(KeyPointEvidence))
