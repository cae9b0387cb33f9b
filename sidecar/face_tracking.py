"""Finding the face box frame to frame for the box detectors (Haar, DeepFace's): a full-frame search
on a downscaled copy every ``detect_every`` samples, and a re-detection in a padded window around the
last face in between, so a still face costs a few ms a sample and a lost one is noticed at once.
(The ``mediapipe`` detector tracks with its own landmarks: sidecar/face_mesh.py.)"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.settings_sections import EmotionSettings
from sidecar.face_detectors import MIN_FACE_PX, Detection, FaceDetector

TRACK_FACE_PX = 64  # the tracking window is rescaled so the face is about this wide (~3-6 ms)
TRACK_PAD = 0.35  # tracking window = last box grown by this fraction of its size on each side
SMOOTH_MIN_IOU = 0.75  # boxes overlapping this much are averaged (jitter), less is a real move
TRACK_SIZE_RANGE = (0.6, 1.6)  # a tracked face may shrink/grow this much between samples


@dataclass
class Track:
    """A face box in original frame pixels, its confidence and the eyes the detector gave."""

    box: tuple[int, int, int, int]  # x, y, w, h in original frame pixels
    confidence: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # from the detector, frame px


class BoxTracker:
    """The face box of each sampled frame of one answer; ``reset`` between answers."""

    def __init__(self, detector: FaceDetector, options: EmotionSettings) -> None:
        self._detector = detector
        self.options = options
        self.reset()

    def reset(self) -> None:
        self._track: Track | None = None
        self._since_full = 0

    def find(self, src: np.ndarray) -> tuple[Track | None, bool]:
        opts = self.options
        if self._track is not None and self._since_full + 1 < opts.detect_every:
            tracked = self._near(src, self._track)
            if tracked is not None:
                self._since_full += 1
                self._track = self._smooth(self._track, tracked)
                return self._track, True
        # full detection: on schedule, with nothing tracked, or when tracking lost the face
        found = self._detect_full(src)
        self._since_full = 0
        self._track = self._smooth(self._track, found)
        return self._track, False

    @staticmethod
    def _smooth(prev: Track | None, new: Track | None) -> Track | None:
        """Average a new box with the last one when they nearly agree.

        Haar boxes jitter by a few % between samples of a still face (its scale grid is 10 % wide);
        halving that keeps emotion crops steady and head movement near 0 for a still head. A real
        move (overlap < SMOOTH_MIN_IOU) is taken as measured, without lag.
        """
        if prev is None or new is None or _iou(prev.box, new.box) < SMOOTH_MIN_IOU:
            return new
        box = tuple(int(round((a + b) / 2.0)) for a, b in zip(prev.box, new.box, strict=True))
        return Track(box, new.confidence, new.eyes)  # type: ignore[arg-type]

    def _detect_full(self, src: np.ndarray) -> Track | None:
        h, w = src.shape[:2]
        scale = min(1.0, self.options.detect_width / w)
        small = src
        if scale < 1.0:
            small = cv2.resize(
                src, (self.options.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        dets = self._detector.detect(small, MIN_FACE_PX, None)
        return self._pick(dets, 1.0 / scale, 0.0, 0.0, src.shape)

    def _near(self, src: np.ndarray, last: Track) -> Track | None:
        # re-detect in a padded window around the last face, rescaled so the face is ~TRACK_FACE_PX
        # wide and limited to plausible sizes: a few ms instead of ~30 for a full-frame search, and unlike
        # template tracking it confirms a face is still there (no face => no emotion)
        img_h, img_w = src.shape[:2]
        x, y, bw, bh = last.box
        size = max(bw, bh)
        pad = size * TRACK_PAD
        x0, y0 = max(0, int(x - pad)), max(0, int(y - pad))
        x1, y1 = min(img_w, int(x + bw + pad + 1)), min(img_h, int(y + bh + pad + 1))
        if x1 - x0 < 20 or y1 - y0 < 20:
            return None
        roi = src[y0:y1, x0:x1]
        r = min(1.0, TRACK_FACE_PX / size)
        if r < 1.0:
            roi = cv2.resize(
                roi,
                (max(1, round((x1 - x0) * r)), max(1, round((y1 - y0) * r))),
                interpolation=cv2.INTER_AREA,
            )
        lo, hi = TRACK_SIZE_RANGE
        dets = self._detector.detect(roi, max(20, int(size * r * lo)), int(size * r * hi) + 1)
        return self._pick(dets, 1.0 / r, x0, y0, src.shape)

    def _pick(
        self, dets: list[Detection], inv_scale: float, ox: float, oy: float, shape: tuple[int, ...]
    ) -> Track | None:
        floor = self.options.face_confidence_floor
        dets = [d for d in dets if d.confidence >= floor]
        if not dets:
            return None
        best = max(dets, key=lambda d: (d.box[2] * d.box[3], d.confidence))  # the largest face
        bx, by, bw, bh = (v * inv_scale for v in best.box)
        img_h, img_w = shape[:2]
        x0, y0 = max(0, round(ox + bx)), max(0, round(oy + by))
        x1, y1 = min(img_w, round(ox + bx + bw)), min(img_h, round(oy + by + bh))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        eyes = None
        if best.eyes is not None:
            (ax, ay), (bx2, by2) = best.eyes
            eyes = ((ox + ax * inv_scale, oy + ay * inv_scale), (ox + bx2 * inv_scale, oy + by2 * inv_scale))
        return Track((x0, y0, x1 - x0, y1 - y0), best.confidence, eyes)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)

