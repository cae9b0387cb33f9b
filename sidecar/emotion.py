"""Live facial analysis of sampled webcam frames: face, emotion, gaze / eye contact, head pose, framing.

Runs inside the sidecar worker on one core beside speech recognition, so every step is sized for
CPU. The default ``mediapipe`` detector runs MediaPipe's landmark models (``sidecar.face_mesh``,
geometry in ``sidecar.face_geometry``): BlazeFace finds the face, the 468-landmark model tracks it
frame to frame, the iris model gives gaze. With Haar/DeepFace detectors faces are detected on a frame
downscaled to ``detect_width`` every ``detect_every`` samples and re-detected in a padded window around
the last face in between. Detectors: ``sidecar.face_detectors``; emotion models: ``sidecar.emotion_classifiers``.

Every result is a ``pipeline.records.FrameSample``. No face means no emotion: the analyzer never
guesses one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import cv2
import numpy as np

from pipeline.records import FrameFraming, FrameSample
from pipeline.settings_sections import EmotionSettings
from sidecar import face_geometry as geo
from sidecar.emotion_classifiers import (
    EMOTION_LABELS,
    FER_SIZE,
    EmotionModel,
    face_crop,
    make_emotion_model,
)
from sidecar.face_detectors import (
    EYE_CASCADE,
    MIN_EYE_FACE_PX,
    FaceDetector,
    find_eyes,
    load_cascade,
    make_detector,
    to_gray_and_bgr,
)
from sidecar.face_mesh import MediaPipeFaceDetector, MeshFace
from sidecar.face_tracking import BoxTracker, Track

FRONTAL_LIMIT = 0.12  # eye midpoint off the box centre / eye-height difference (face units) still frontal
SMALL_FACE_PX = 32  # emotion on faces narrower than this is flagged uncertain
# Where a frontal face's eye line sits in an alt2 box (fraction of height), measured on the photos.
EYE_LINE_V = 0.39


class EmotionAnalyzer:
    """Per-answer state machine over sampled frames. Not thread-safe; one per worker process."""

    def __init__(
        self, options: EmotionSettings | None = None, *, detector: FaceDetector | None = None
    ) -> None:
        self.options = options or EmotionSettings()
        # built now so a missing detector package fails at start-up, not on the first frame
        self._detector = (
            detector if detector is not None
            else make_detector(self.options.detector, self.options.threads, self.options.landmark_model)
        )
        self._mesh = self._detector.mesh if isinstance(self._detector, MediaPipeFaceDetector) else None
        self._boxes = BoxTracker(self._detector, self.options)
        self._eyes: cv2.CascadeClassifier | None = None
        self._emotion: EmotionModel | None = None
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new answer: forget the tracked face and the previous sample."""
        if getattr(self, "_boxes", None) is not None:
            self._boxes.reset()
        self._prev_face: tuple[float, float, float] | None = None  # cx, cy, w of the last sample's face
        self._last_sig: np.ndarray | None = None  # sparse pixel sample of the last frame
        self._last_result: FrameSample | None = None
        # each eye's iris offsets (along, across its corner line) from the last analysed frame, and the
        # eye measured then: a tracked frame measures the other one and reuses this one's reading
        self._iris_carry: tuple[list[tuple[float, float]], int] | None = None
        if getattr(self, "_mesh", None) is not None:
            assert self._mesh is not None
            self._mesh.reset()

    @property
    def detector_name(self) -> str:
        return self._detector.name

    @property
    def emotion_backend(self) -> str | None:
        return self._emotion.name if self._emotion is not None else None

    def _load(self) -> dict[str, float]:
        timings: dict[str, float] = {}
        if self.options.threads is not None:
            # the worker is its own process: pin OpenCV to its share of the CPU (ASR runs beside it)
            cv2.setNumThreads(self.options.threads)
        t0 = time.perf_counter()
        self._detector.load()
        t1 = time.perf_counter()
        if self._eyes is None and self._mesh is None:  # the landmark path needs no eye cascade
            self._eyes = load_cascade(EYE_CASCADE)
        t2 = time.perf_counter()
        if self._emotion is None:
            model = make_emotion_model(self.options)
            model.load()
            self._emotion = model
        t3 = time.perf_counter()
        timings.update(detector_load_s=t1 - t0, eyes_load_s=t2 - t1, emotion_load_s=t3 - t2)
        return timings

    def warm_up(self) -> dict[str, float]:
        """Load every model and run one dummy frame through them. Returns seconds per step."""
        t0 = time.perf_counter()
        timings = self._load()
        t1 = time.perf_counter()
        dummy = np.full((480, 640, 3), 127, np.uint8)
        self.analyze(dummy, 0.0)
        assert self._emotion is not None
        self._emotion.predict(np.full((FER_SIZE, FER_SIZE), 127, np.uint8))  # the dummy has no face
        self.reset()
        timings["first_frame_s"] = time.perf_counter() - t1
        timings["total_s"] = time.perf_counter() - t0
        return timings

    # -- per frame -------------------------------------------------------------------------------

    def analyze(self, frame_bgr: np.ndarray, t: float, *, color: str = "bgr") -> FrameSample:
        """Analyse one sampled frame taken at ``t`` seconds; ``color`` orders 3/4-channel frames.

        Accepts gray, BGR/RGB, BGRA/RGBA, any real dtype and strided views; raises ValueError for
        what is not an image (wrong ndim or channel count, empty, complex, not an array). Returns a
        ``FrameSample`` (pipeline/records.py, every field described there); with no face every
        face-derived field is None (never a guessed emotion).
        """
        start = time.perf_counter()
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"t must be a finite number of seconds, got {t}")
        if self._emotion is None or (self._eyes is None and self._mesh is None):
            self._load()
        gray: np.ndarray | None = None
        if self._mesh is not None:  # the landmark path reads the BGR frame only: no full-frame gray
            bgr = frame_bgr if _plain_bgr(frame_bgr, color) else None
            if bgr is None:
                bgr = to_gray_and_bgr(frame_bgr, color=color, need_bgr=True)[1]
            assert bgr is not None
            sig = bgr[::8, ::8].copy()
        else:
            gray, bgr = to_gray_and_bgr(frame_bgr, color=color, need_bgr=self._detector.needs_bgr)
            sig = gray[::8, ::8].copy()

        # a frozen camera (or a stalled stream) repeats the same frame: answer from the last result
        # for ~0.02 ms instead of re-running detection, and say so
        last = self._last_result
        if last is not None and self._last_sig is not None and np.array_equal(sig, self._last_sig):
            result = _clone(last)
            result["t"], result["frozen"], result["tracked"] = t, True, bool(last["face"])
            result["head"]["movement"] = 0.0 if last["face"] else None
        elif self._mesh is not None:
            assert bgr is not None
            result = self._describe_mesh(bgr, self._mesh.process(bgr, bgr=True, iris=False), t)
            result["frozen"] = False
            self._last_sig, self._last_result = sig, _clone(result)
        else:
            assert gray is not None
            src = bgr if self._detector.needs_bgr else gray
            assert src is not None
            face, tracked = self._boxes.find(src)
            result = self._describe(gray, face, tracked, t)
            result["frozen"] = False
            self._last_sig, self._last_result = sig, _clone(result)
        result["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 3)
        return result

    # -- description of the face -------------------------------------------------------------------

    def _empty(self, t: float, tracked: bool) -> FrameSample:
        """The record of a sample with no face: every face-derived field None."""
        out: FrameSample = {
            "t": t,
            "face": False,
            "box": None,
            "face_confidence": None,
            "emotions": None,
            "dominant": None,
            "confidence": None,
            "uncertain": False,  # only meaningful when a face is found
            "gaze": {"eye_contact": None, "score": None, "eyes_found": 0, "frontal": None,
                     "method": "frontal-proxy", "yaw": None, "pitch": None, "iris": None, "reason": None},
            "head": {"movement": None, "yaw_proxy": None, "pitch_proxy": None, "yaw": None, "pitch": None,
                     "roll": None},
            "detector": self._detector.name,
            "model": self._emotion.name if self._emotion is not None else None,
            "tracked": tracked,
            "frozen": False,
            "latency_ms": 0.0,  # both set by analyze()
            "framing": None,
            "eyes": None,
            "mouth": None,
            "aligned": False,
            "too_small": False,
        }
        return out

    def _describe(self, gray: np.ndarray, face: Track | None, tracked: bool, t: float) -> FrameSample:
        opts = self.options
        out = self._empty(t, tracked and face is not None)
        out["face"] = face is not None
        if face is None:
            self._prev_face = None
            out["gaze"]["reason"] = "no face"
            return out

        x, y, w, h = face.box
        out["box"] = [int(x), int(y), int(w), int(h)]
        out["face_confidence"] = round(face.confidence, 4)

        self._emotions_into(out, face_crop(gray, face.box), w)

        # gaze / eye-contact proxy
        out["framing"] = _framing(gray.shape, face.box)
        out["too_small"] = bool(w < opts.min_gaze_face_px)
        eyes: tuple[tuple[float, float], tuple[float, float]] | None
        if face.eyes is not None:  # landmark detectors (mtcnn, ...) give eyes; better than a cascade
            (lx, ly), (rx, ry) = face.eyes
            eyes = (((lx - x) / w, (ly - y) / h), ((rx - x) / w, (ry - y) / h))
            found = 2
        else:
            eyes, found = find_eyes(self._eyes, gray, face.box)
        out["gaze"]["eyes_found"] = found
        # frontal: two eyes, level, a plausible distance apart, in the upper half, their midpoint
        # near the box centre (a turned head shifts both eyes to one side of the Haar box)
        frontal: bool | None = None
        s_frontal = 0.0  # 1 = perfectly frontal, 0.5 at the yaw/roll limits, below when not frontal
        if w >= MIN_EYE_FACE_PX:
            frontal = False
            if eyes is not None:
                (lu, lv), (ru, rv) = eyes  # face-normalised coordinates, image-left eye first
                mid_u, mid_v = (lu + ru) / 2.0, (lv + rv) / 2.0
                shape_ok = 0.2 <= ru - lu <= 0.7 and max(lv, rv) < 0.55
                s_frontal = max(0.0, 1.0 - max(abs(mid_u - 0.5), abs(lv - rv)) / (2 * FRONTAL_LIMIT))
                if not shape_ok:
                    s_frontal = min(s_frontal, 0.4)
                frontal = bool(s_frontal > 0.5)
                out["head"]["yaw_proxy"] = round(float(mid_u - 0.5) * 2.0, 4)
                out["head"]["pitch_proxy"] = round(float(mid_v - EYE_LINE_V) * 4.0, 4)
            elif found == 1:
                s_frontal = 0.25
        out["gaze"]["frontal"] = frontal
        # the proxy is only "a frontal face": where the face sits in the frame is framing, not eye contact
        if frontal is not None:
            out["gaze"]["eye_contact"] = bool(frontal)
            out["gaze"]["score"] = round(float(s_frontal), 4)  # > 0.5 exactly when frontal
        else:
            out["gaze"]["reason"] = "face too small"
        out["head"]["movement"] = self._movement(face.box)
        return out

    def _movement(self, box: tuple[int, int, int, int]) -> float | None:
        """Centre shift in face widths plus |log size change| since the last sample (None on the first)."""
        x, y, w, _h = box
        cx, cy = x + w / 2.0, y + _h / 2.0
        move = None
        if self._prev_face is not None:
            pcx, pcy, pw = self._prev_face
            move = round(math.hypot(cx - pcx, cy - pcy) / max(pw, 1.0) + abs(math.log(max(w, 1) / max(pw, 1.0))), 4)
        self._prev_face = (cx, cy, float(w))
        return move

    def _describe_mesh(self, bgr: np.ndarray, face: MeshFace | None, t: float) -> FrameSample:
        """The landmark path: every FrameSample field from the 468 landmarks and both irises."""
        opts = self.options
        out = self._empty(t, False)  # the no-face record, filled in below
        out["gaze"]["method"] = "iris"
        carry, self._iris_carry = self._iris_carry, None  # kept only by a frame whose gaze is judged
        if face is None:
            self._prev_face = None
            out["gaze"]["reason"] = "no face"
            return out
        img_h, img_w = bgr.shape[:2]
        lm = face.landmarks
        bx, by, bw, bh = face.box
        x0, y0 = max(0, int(round(bx))), max(0, int(round(by)))
        x1, y1 = min(img_w, int(round(bx + bw))), min(img_h, int(round(by + bh)))
        if x1 - x0 < 2 or y1 - y0 < 2:  # the landmarks left the frame
            self._prev_face = None
            self.reset_track()
            return out
        box = (x0, y0, x1 - x0, y1 - y0)
        w = box[2]
        out["face"], out["box"] = True, list(box)
        out["face_confidence"] = round(face.score, 4)
        out["tracked"] = face.tracked
        self._emotions_into(out, geo.aligned_crop(bgr, lm, FER_SIZE), w)  # gray of the face only
        out["aligned"] = True
        out["framing"] = _framing(bgr.shape, box)
        out["head"]["movement"] = self._movement(box)
        pose = geo.head_pose(lm, img_w, img_h)
        if pose is not None:
            out["head"]["yaw"], out["head"]["pitch"], out["head"]["roll"] = (
                round(pose.yaw, 2), round(pose.pitch, 2), round(pose.roll, 2))
        smile, mouth_open = geo.mouth_shape(lm)
        out["mouth"] = {"smile": round(smile, 4), "smiling": bool(smile > opts.smile_threshold),
                        "open": round(mouth_open, 4)}
        gaze = out["gaze"]
        if w < opts.min_gaze_face_px:
            # too few pixels for the eyes: say so, never a guess about gaze; expression is flagged
            out["too_small"], out["uncertain"] = True, True
            gaze["reason"] = "face too small"
            return out
        ear = geo.eye_aspect_ratios(lm)
        closed = bool((ear[0] + ear[1]) / 2.0 < opts.blink_ear)
        out["eyes"] = {"ear": [round(ear[0], 4), round(ear[1], 4)], "closed": closed}
        if pose is not None:
            gaze["frontal"] = bool(abs(pose.yaw) <= opts.eye_contact_yaw_deg
                                   and abs(pose.pitch) <= opts.eye_contact_pitch_deg)
        if closed:
            gaze["reason"] = "eyes closed"
            return out
        assert self._mesh is not None
        # only now: a blink or a tiny face needs no iris. On a tracked frame after a judged one, one eye
        # is measured (the one not measured then) and the other's offsets are reused from that frame
        alternate = (opts.iris_alternate and not self._mesh.irises_with_landmarks and face.tracked
                     and carry is not None and pose is not None)
        eyes = (1 - carry[1],) if alternate and carry is not None else (0, 1)
        face.iris = self._mesh.irises(bgr, lm, bgr=True, eyes=eyes)
        gaze["eyes_found"] = 2 if face.iris is not None else 0
        if face.iris is None or pose is None:
            gaze["reason"] = "no iris" if face.iris is None else "head pose not solved"
            return out
        offs = geo.iris_offsets(lm, face.iris)
        if len(eyes) == 1 and carry is not None:
            offs[1 - eyes[0]] = carry[0][1 - eyes[0]]
        self._iris_carry = (offs, eyes[-1])
        gaze["iris_fresh"] = [k in eyes for k in (0, 1)]
        d = geo.gaze_from_offsets(pose, lm, offs)
        gaze["yaw"], gaze["pitch"] = round(d.yaw, 2), round(d.pitch, 2)
        gaze["iris"] = [round(d.iris[0], 4), round(d.iris[1], 4)]
        contact, score = geo.eye_contact(d.yaw, d.pitch, opts.eye_contact_yaw_deg, opts.eye_contact_pitch_deg)
        gaze["eye_contact"], gaze["score"] = contact, round(score, 4)
        return out

    def reset_track(self) -> None:
        if self._mesh is not None:
            self._mesh.reset()

    def _emotions_into(self, out: FrameSample, crop: np.ndarray, w: int) -> None:
        assert self._emotion is not None
        probs = self._emotion.predict(crop)
        probs = np.clip(np.nan_to_num(probs[: len(EMOTION_LABELS)], nan=0.0), 0.0, None)
        total = float(probs.sum())
        probs = probs / total if total > 0 else np.full(len(EMOTION_LABELS), 1.0 / len(EMOTION_LABELS))
        k = int(np.argmax(probs))
        out["emotions"] = {label: round(float(p), 5) for label, p in zip(EMOTION_LABELS, probs, strict=True)}
        out["dominant"] = EMOTION_LABELS[k]
        out["confidence"] = round(float(probs[k]), 5)
        # tiny faces give blurry 64x64 crops: report the prediction but flag it
        out["uncertain"] = bool(probs[k] < self.options.emotion_confidence_floor or w < SMALL_FACE_PX)


MESH_IRIS = "mediapipe-mesh+iris"  # the landmark path with face_landmark + the iris model (before attention)
MESH_IRIS_BOTH_EYES = "mediapipe-mesh+iris-both-eyes"  # ... measuring both irises on every frame


def analyzer_settings(spec: str, threads: int = 1) -> EmotionSettings:
    """Settings for a detector name, or for a variant of the landmark path that benches and the validity
    harness compare side by side: ``mediapipe-mesh+iris`` and ``mediapipe-mesh+iris-both-eyes``."""
    if spec == MESH_IRIS:
        return EmotionSettings(detector="mediapipe", landmark_model="mesh+iris", threads=threads)
    if spec == MESH_IRIS_BOTH_EYES:
        return EmotionSettings(detector="mediapipe", landmark_model="mesh+iris", iris_alternate=False,
                               threads=threads)
    return EmotionSettings(detector=spec, threads=threads)


def _plain_bgr(frame: object, color: str) -> bool:
    """A non-empty C-contiguous HxWx3 uint8 BGR frame: exactly what ``to_gray_and_bgr`` hands back as is."""
    return (color == "bgr" and isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
            and frame.shape[2] == 3 and frame.shape[0] > 0 and frame.shape[1] > 0 and frame.flags.c_contiguous)


def _clone(sample: FrameSample) -> FrameSample:
    """A copy of a sample sharing nothing mutable (its values are dicts, lists and scalars): several times
    faster than copy.deepcopy on the hot path (scalars are shared, never visited)."""

    def clone(v: Any) -> Any:
        kind = type(v)
        if kind is dict:
            return {k: clone(x) if type(x) in _CONTAINERS else x for k, x in v.items()}
        if kind is list:
            return [clone(x) if type(x) in _CONTAINERS else x for x in v]
        return v.copy()  # an ndarray

    out: FrameSample = clone(sample)
    return out


_CONTAINERS = (dict, list, np.ndarray)


def _framing(shape: tuple[int, ...], box: tuple[int, int, int, int]) -> FrameFraming:
    img_h, img_w = shape[:2]
    x, y, w, h = box
    dx, dy = (x + w / 2.0 - img_w / 2.0) / img_w, (y + h / 2.0 - img_h / 2.0) / img_h
    return {"offset": [round(dx, 4), round(dy, 4)], "scale": round(w / img_w, 4)}
