"""Stage 2 of grading: ``score(features, options)``, pure and model-free, with its options
(``GradeOptions``), the fitted ``Calibration`` and the bands. See ``score`` for the formula."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.grading_features import GradeFeatures, KeyPointEvidence
from pipeline.keypoints import DEFAULT_KEYPOINT_MODEL_PATH, KeypointModel, default_keypoint_model
from pipeline.settings_sections import GradingSettings

if TYPE_CHECKING:
    from pipeline.settings import Settings

DEFAULT_CALIBRATION_PATH = Path(__file__).with_name("grading_calibration.json")
BANDS = ("weak", "fair", "good", "strong")


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


_DEFAULT = GradingSettings()


@dataclass(frozen=True)
class GradeOptions:
    """The grading section of the settings plus the loaded calibration (defaults: the settings')."""

    keypoint_match_threshold: float = _DEFAULT.keypoint_match_threshold
    weight_similarity: float = _DEFAULT.weight_similarity
    weight_coverage: float = _DEFAULT.weight_coverage
    similarity_floor: float = _DEFAULT.similarity_floor
    similarity_ceiling: float = _DEFAULT.similarity_ceiling
    band_cutoffs: tuple[float, float, float] = _DEFAULT.band_cutoffs
    min_answer_words: int = _DEFAULT.min_answer_words
    off_topic_similarity: float = _DEFAULT.off_topic_similarity
    calibration: Calibration = field(default_factory=default_calibration)
    keypoint_model: KeypointModel = field(default_factory=default_keypoint_model)

    @classmethod
    def from_settings(
        cls, s: Settings, calibration: Calibration | None = None, keypoint_model: KeypointModel | None = None
    ) -> GradeOptions:
        if calibration is None:
            path = s.grading.calibration_path or DEFAULT_CALIBRATION_PATH
            calibration = Calibration.load(path)
        if keypoint_model is None:
            keypoint_model = KeypointModel.load(s.grading.keypoint_model_path or DEFAULT_KEYPOINT_MODEL_PATH)
        return cls(
            keypoint_match_threshold=s.grading.keypoint_match_threshold,
            weight_similarity=s.grading.weight_similarity,
            weight_coverage=s.grading.weight_coverage,
            similarity_floor=s.grading.similarity_floor,
            similarity_ceiling=s.grading.similarity_ceiling,
            band_cutoffs=s.grading.band_cutoffs,
            min_answer_words=s.grading.min_answer_words,
            off_topic_similarity=s.grading.off_topic_similarity,
            calibration=calibration,
            keypoint_model=keypoint_model,
        )


def stretch(calibrated: float, floor: float, ceiling: float) -> float:
    """The calibrated similarity on a 0-1 scale from ``floor`` (0) to ``ceiling`` (1), clipped."""
    if ceiling <= floor:
        return calibrated
    return min(1.0, max(0.0, (calibrated - floor) / (ceiling - floor)))


def covered_probability(e: KeyPointEvidence, model: KeypointModel) -> float | None:
    """P(covered) of one key point under the model; None for records stored before its features."""
    if not e.features or e.best_similarity is None:
        return None
    return model.probability(e.features)


def band_for(score: float, cutoffs: Sequence[float]) -> str:
    c = sorted(cutoffs)
    for name, cut in zip(BANDS, c, strict=False):
        if score < cut:
            return name
    return BANDS[len(c)] if len(c) < len(BANDS) else BANDS[-1]


def score(features: GradeFeatures | Mapping[str, Any], options: GradeOptions | None = None) -> Grade:
    """Pure: grade stored features under ``options`` (no model, microseconds).

    Score formula (0-1):
        calibrated = clip(intercept + sum_i coef_i * (x_i - mean_i) / scale_i, 0, 1)
    a ridge regression onto human grades / 5 of the features named in the calibration JSON
    (shipped: cos_ref, cos_ref_demoted, soft_recall, soft_precision, len_ratio, min(len_ratio, 0),
    soft_recall^2), fitted on the Mohler 2011 data by ``python -m pipeline.evaluate grading --fit-out
    pipeline/grading_calibration.json`` (question-disjoint 5-fold CV: pearson r 0.62, RMSE 0.87 on
    0-5, vs r 0.51 for the raw cosine). Each x_i is first clipped to the range seen in that data,
    so a spoken answer far longer than a written one cannot extrapolate the linear model. Then
        score = calibrated                                        if key points were derived
        score = (w_sim * sim + w_cov * coverage) / (w_sim + w_cov)    if the author gave them
    where sim = clip((calibrated - floor) / (ceiling - floor), 0, 1) (``grade_similarity_floor`` /
    ``_ceiling``: the Mohler-fitted value sits near 0.5 for an unrelated answer and near 0.9 for a
    model one, since most Mohler answers pass; stretched, a vague answer no longer earns most of the
    similarity half), coverage = matched key points / key points, and w_sim / w_cov are
    ``grade_weight_similarity`` / ``grade_weight_coverage``. A key point is matched when the
    key-point model's probability (``pipeline.keypoints.KeypointModel``, fitted by ``python -m
    pipeline.evaluate keypoints``) >= ``keypoint_match_threshold``; records stored before that model
    (no evidence features) compare their best span cosine with the same threshold. Bands: score < cutoffs[0] weak,
    < cutoffs[1] fair, < cutoffs[2] good, else strong.

    Flags: ``no_speech`` (no word in the transcript: score and band are None, never a guessed
    number), ``too_short`` (fewer than ``min_answer_words`` words), ``off_topic`` (cosine to
    both the question and the reference below ``off_topic_similarity``; an answer that matches
    the reference is not off topic even if it shares no words with the question), ``truncated``
    (input was capped). Only ``off_topic`` changes the score: the calibration data has no
    off-topic answers (its regression pulls them up towards the average grade), so the score
    becomes min(score, max(0, raw cosine)), i.e. at most ``off_topic_similarity``.
    """
    f = features if isinstance(features, GradeFeatures) else GradeFeatures.from_dict(features)
    opt = options or GradeOptions()
    thr = opt.keypoint_match_threshold
    matched: list[dict[str, Any]] = []
    missed: list[dict[str, Any]] = []
    for e in f.key_points:
        prob = covered_probability(e, opt.keypoint_model)
        measure = prob if prob is not None else e.best_similarity
        extra = {} if prob is None else {"probability": prob}  # records before the model have none
        if measure is not None and measure >= thr:
            matched.append(
                {
                    "key_point": e.key_point,
                    "span": e.span,
                    "start": e.start,
                    "end": e.end,
                    "similarity": e.best_similarity,
                    **extra,
                }
            )
        else:
            # The closest span, its times and unsaid words stay in the stored features' evidence.
            missed.append({"key_point": e.key_point, "best_similarity": e.best_similarity, **extra})

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
            sim = stretch(calibrated, opt.similarity_floor, opt.similarity_ceiling)
            value = (opt.weight_similarity * sim + opt.weight_coverage * coverage) / total
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
