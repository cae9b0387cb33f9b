"""MediaPipe's face models run by LiteRT without importing mediapipe: BlazeFace detection (SSD anchors,
weighted NMS), 468 face landmarks and both irises on a rotated 192x192 crop (face_landmark_with_attention; or
face_landmark, then the iris model on 64x64 eye crops), tracking.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sidecar.face_detectors import Detection, DetectorUnavailableError
from sidecar.tflite_split import SplitModel

# BlazeFace short range (face_detection_short_range.pbtxt / face_detection.pbtxt in google/mediapipe)
SHORT_RANGE = "face_detection/face_detection_short_range.tflite"
FULL_RANGE = "face_detection/face_detection_full_range_sparse.tflite"
LANDMARK_MODEL = "face_landmark/face_landmark.tflite"
IRIS_MODEL = "iris_landmark/iris_landmark.tflite"
# 468 landmarks plus both irises from one 192x192 crop: its eye and iris heads read the face model's own
# features, so both irises cost ~0.3 ms instead of a 1.2 ms iris-model run per eye (custom ops: tflite_split)
ATTENTION_MODEL = "face_landmark/face_landmark_with_attention.tflite"
ATTENTION_OUTPUTS = ("output_mesh_identity", "conv_faceflag", "output_left_iris", "output_right_iris",
                     "output_left_eye", "output_right_eye")
LANDMARK_MODELS = ("attention", "mesh+iris")
# The mesh points each eye head's 71 points refine, in order (MediaPipe's
# tensors_to_face_landmarks_with_attention.pbtxt): lower lid with both corners, upper lid, then halos/brow
REFINED_EYE_POINTS = {
    "left": (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23, 22,
             26, 112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224,
             223, 222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63,
             105, 66, 107, 55, 193),
    "right": (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339, 254,
              253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451, 452, 453,
              464, 342, 445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349,
              350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417),
}
NMS_IOU = 0.3  # min_suppression_threshold of the weighted NMS
SCORE_CLIP = 100.0  # score_clipping_thresh before the sigmoid
LANDMARK_SIZE = 192
IRIS_SIZE = 64
FACE_ROI_SCALE = 1.5  # RectTransformation scale of the face crop (from a detection or from landmarks)
EYE_ROI_SCALE = 2.3  # ... of each eye crop
# landmark indices (MediaPipe's canonical face mesh); "first" eye = image left on an unmirrored frame
EYE_CORNERS = ((33, 133), (362, 263))  # (outer, inner) of the person's right eye, (inner, outer) of the left
TRACK_VECTOR = (33, 263)  # the crop's rotation follows the line between the outer eye corners


@dataclass(frozen=True)
class _DetectorSpec:
    file: str
    size: int
    strides: tuple[int, ...]
    interpolated: bool  # interpolated_scale_aspect_ratio 1.0 adds a second anchor per cell
    min_score: float


_SPECS = {
    "short": _DetectorSpec(SHORT_RANGE, 128, (8, 16, 16, 16), True, 0.5),
    "full": _DetectorSpec(FULL_RANGE, 192, (4,), False, 0.6),
}


def mediapipe_modules() -> Path:
    """The folder of mediapipe's bundled .tflite files, found without importing mediapipe."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailableError(
            "face detector 'mediapipe' needs the mediapipe==0.10.14 wheel (installed with --no-deps) for its "
            ".tflite files, or set MOCKAI_FACE_DETECTOR=opencv"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "modules"
    for rel in (SHORT_RANGE, FULL_RANGE, LANDMARK_MODEL, IRIS_MODEL, ATTENTION_MODEL):
        if not (path / rel).is_file():
            raise DetectorUnavailableError(f"{path / rel} is missing (mediapipe 0.10.14 ships it; later wheels do not)")
    return path


def ssd_anchors(size: int, strides: tuple[int, ...], interpolated: bool) -> np.ndarray:
    """Anchor centres (N, 2), normalised, as SsdAnchorsCalculator makes them with fixed_anchor_size."""
    out: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        j, per_cell = i, 0
        while j < len(strides) and strides[j] == strides[i]:  # layers of one stride share a grid
            per_cell += 2 if interpolated else 1
            j += 1
        fm = math.ceil(size / strides[i])
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) against boxes b (N, 4), all as x0, y0, x1, y1."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-max suppression: overlapping boxes are averaged by score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out = []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        mask = _iou(boxes[top], boxes[remaining]) > NMS_IOU
        mask[0] = True  # the top box is always its own group (even a degenerate zero-area one)
        group = remaining[mask]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kps = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[top])))
        remaining = remaining[~mask]
    return out


class _Model:
    def __init__(self, path: Path, threads: int, batch: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interp: Any = Interpreter(model_path=str(path), num_threads=threads)
        self.input = self.interp.get_input_details()[0]["index"]
        if batch != 1:  # several crops in one invocation: the weights are read once for all of them
            shape = list(self.interp.get_input_details()[0]["shape"])
            self.interp.resize_tensor_input(self.input, [batch, *shape[1:]])
        self.interp.allocate_tensors()
        self.outputs = {d["name"]: d["index"] for d in self.interp.get_output_details()}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.interp.set_tensor(self.input, x[None].astype(np.float32, copy=False))
        return self._invoke()

    def run_into(self, fill: Callable[[np.ndarray], object]) -> dict[str, np.ndarray]:
        """Invoke on an input that ``fill`` writes straight into the input tensor (batch, h, w, c)."""
        fill(self.interp.tensor(self.input)())  # the view dies here: invoke refuses while one is alive
        return self._invoke()

    def _invoke(self) -> dict[str, np.ndarray]:
        self.interp.invoke()
        return {name: np.asarray(self.interp.get_tensor(i)) for name, i in self.outputs.items()}


class BlazeFace:
    """BlazeFace on a letterboxed frame; returns detections in frame pixels with 6 keypoints."""

    def __init__(self, kind: str, modules: Path, threads: int = 1) -> None:
        self.spec = _SPECS[kind]
        self._model = _Model(modules / self.spec.file, threads)
        self._anchors = ssd_anchors(self.spec.size, self.spec.strides, self.spec.interpolated)

    def detect(self, img: np.ndarray, bgr: bool = False) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """[(box x0,y0,x1,y1 px, keypoints (6, 2) px, score)], best first, of an RGB (or BGR) frame."""
        n = self.spec.size
        h, w = img.shape[:2]
        r = n / max(h, w)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        canvas = np.zeros((n, n, 3), np.float32)
        px, py = (n - nw) // 2, (n - nh) // 2
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
        if bgr:
            small = small[:, :, ::-1]
        canvas[py : py + nh, px : px + nw] = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        out = self._model.run(canvas)
        # the two outputs are named differently in each model: (1, N, 16) boxes + keypoints, (1, N, 1) scores
        raw = next(v for v in out.values() if v.shape[-1] == 16)[0]
        logits = next(v for v in out.values() if v.shape[-1] == 1)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
        keep = np.nonzero(scores >= self.spec.min_score)[0]
        if keep.size == 0:
            return []
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        cx = raw[:, 0] / n + anchors[:, 0]  # reverse_output_order: x, y, w, h
        cy = raw[:, 1] / n + anchors[:, 1]
        bw, bh = raw[:, 2] / n, raw[:, 3] / n
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / n + anchors[:, None, :]
        # letterbox -> frame pixels
        off = np.array([px / n, py / n])
        sc = np.array([n / r, n / r])
        result = []
        for box, kp, score in weighted_nms(boxes, kps, scores):
            b = np.concatenate([(box[:2] - off) * sc, (box[2:] - off) * sc])
            result.append((b, (kp - off) * sc, score))
        return result


@dataclass
class Roi:
    """A rotated square crop: centre and side in frame pixels, rotation in radians (y down)."""

    cx: float
    cy: float
    size: float
    angle: float

    def matrix(self, n: int, pixel_index: bool = False, flip: bool = False) -> np.ndarray:
        """2x3 affine from crop coordinates (0..n, as the models output them) to frame pixels; with
        ``pixel_index`` from crop pixel indices, whose centres sit half a pixel in (for warpAffine);
        ``flip`` mirrors the crop (u -> n - u, or n - 1 - u for pixel indices)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.size / n
        half = n / 2.0 - (0.5 if pixel_index else 0.0)
        # t = centre - A @ (half, half), A = k * [[c, -s], [s, c]]
        tx, ty = self.cx - k * (c - s) * half, self.cy - k * (s + c) * half
        if flip:  # A @ (2 half - u, v) + t = A @ (-u, v) + t + A @ (2 half, 0)
            return np.array([[-c * k, -s * k, tx + 2.0 * half * c * k], [-s * k, c * k, ty + 2.0 * half * s * k]])
        return np.array([[c * k, -s * k, tx], [s * k, c * k, ty]])

    def crop(self, img: np.ndarray, n: int, flip: bool = False, bgr: bool = False,
             out: np.ndarray | None = None) -> np.ndarray:
        """The n x n crop as float32 RGB in [0, 1] (mirrored when ``flip``; ``bgr`` input is swapped),
        written into ``out`` (an n x n x 3 float32 array, e.g. a model's input tensor) when given."""
        warped = cv2.warpAffine(img, self.matrix(n, pixel_index=True, flip=flip), (n, n),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if bgr:
            cv2.cvtColor(warped, cv2.COLOR_BGR2RGB, dst=warped)  # in place: cheaper than a ::-1 view
        if out is None:
            out = np.empty((n, n, 3), np.float32)
        np.multiply(warped, np.float32(1.0 / 255.0), out=out)
        return out

    def to_frame(self, pts: np.ndarray, n: int, flip: bool = False) -> np.ndarray:
        """Crop-pixel points (N, 2+) -> frame pixels (z, when present, scaled alike)."""
        m = self.matrix(n, flip=flip)
        out = np.array(pts, dtype=np.float64, copy=True)
        out[:, :2] = out[:, :2] @ m[:, :2].T + m[:, 2]
        if out.shape[1] > 2:
            out[:, 2] *= self.size / n
        return out


def roi_from_points(p0: np.ndarray, p1: np.ndarray, box: tuple[float, float, float, float], scale: float) -> Roi:
    """DetectionsToRects + RectTransformation(square_long): rotation from p0->p1, box grown by scale."""
    angle = math.atan2(float(p1[1] - p0[1]), float(p1[0] - p0[0]))
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * scale
    return Roi((x0 + x1) / 2.0, (y0 + y1) / 2.0, side, angle)


def roi_from_landmarks(lm: np.ndarray) -> Roi:
    """The next frame's face crop from this frame's landmarks (MediaPipe's tracking ROI)."""
    a, b = lm[TRACK_VECTOR[0], :2], lm[TRACK_VECTOR[1], :2]
    angle = math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))
    # the landmarks' bounding box is taken in the rotated frame (as RectFromLandmarks with rotation)
    c, s = math.cos(angle), math.sin(angle)
    centre = lm[:, :2].mean(0)
    rel = lm[:, :2] - centre
    u = rel @ np.array([c, s])
    v = rel @ np.array([-s, c])
    cu, cv_ = (u.max() + u.min()) / 2.0, (v.max() + v.min()) / 2.0
    cx, cy = centre + cu * np.array([c, s]) + cv_ * np.array([-s, c])
    side = max(float(u.max() - u.min()), float(v.max() - v.min())) * FACE_ROI_SCALE
    return Roi(float(cx), float(cy), side, angle)


@dataclass
class MeshFace:
    """One face's landmarks in frame pixels."""

    landmarks: np.ndarray  # (468, 3): x, y px; z in px (smaller = nearer the camera)
    iris: np.ndarray | None  # (2, 5, 2): [image-left eye, image-right eye] x 5 iris points (centre first)
    score: float  # landmark model's face presence 0-1
    detection_score: float | None  # BlazeFace score when this frame ran detection
    tracked: bool  # the crop came from the previous frame's landmarks

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.landmarks[:, :2].min(0)
        x1, y1 = self.landmarks[:, :2].max(0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


class FaceMesh:
    """Detect (BlazeFace), then track with the 468-landmark model; iris on both eyes. One face.

    ``landmark_model``: "attention" (default) runs face_landmark_with_attention, whose landmarks come with
    both irises; "mesh+iris" runs face_landmark, then the iris model on each eye's crop.
    """

    def __init__(self, threads: int = 1, presence: float = 0.5, detection_floor: float = 0.5,
                 landmark_model: str = "attention") -> None:
        if landmark_model not in LANDMARK_MODELS:
            raise ValueError(f"landmark_model must be one of {', '.join(LANDMARK_MODELS)}, got {landmark_model!r}")
        self.landmark_model = landmark_model
        self.threads = threads
        self.presence = presence  # below this landmark face score the track is lost and BlazeFace re-runs
        self.detection_floor = detection_floor
        self._short: BlazeFace | None = None
        self._full: BlazeFace | None = None
        self._landmarks: _Model | None = None
        self._iris: _Model | None = None  # both eyes in one batch-2 run
        self._iris_one: _Model | None = None  # one eye
        self._attention: SplitModel | None = None
        self.refine_eyes = True  # attention: the eye heads' points replace the mesh's (off only to compare)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # attention: (landmarks, their irises)
        self._roi: Roi | None = None
        self.detections = 0  # BlazeFace runs since load (tests and benches read it)

    @property
    def irises_with_landmarks(self) -> bool:
        """True when each landmarks run also gives both irises (``irises`` then costs nothing)."""
        return self.landmark_model == "attention"

    def load(self) -> None:
        if self._short is not None:
            return
        modules = mediapipe_modules()
        if self.irises_with_landmarks:
            self._attention = SplitModel(modules / ATTENTION_MODEL, ATTENTION_OUTPUTS, self.threads)
        else:
            self._iris = _Model(modules / IRIS_MODEL, self.threads, batch=len(EYE_CORNERS))
            self._iris_one = _Model(modules / IRIS_MODEL, self.threads)
            self._landmarks = _Model(modules / LANDMARK_MODEL, self.threads)
        self._full = BlazeFace("full", modules, self.threads)
        self._short = BlazeFace("short", modules, self.threads)  # last: load() is done once it is set

    def reset(self) -> None:
        self._roi = None

    def detect(self, img: np.ndarray, bgr: bool = False) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """BlazeFace short range, then full range when it finds nothing (far or small faces)."""
        self.load()
        assert self._short is not None and self._full is not None
        self.detections += 1
        dets = [d for d in self._short.detect(img, bgr) if d[2] >= self.detection_floor]
        if not dets:
            dets = [d for d in self._full.detect(img, bgr) if d[2] >= self.detection_floor]
        return dets

    def process(self, img: np.ndarray, bgr: bool = False, iris: bool = True) -> MeshFace | None:
        """Landmarks of the tracked face, or of the largest face detected when there is no track.

        ``img`` is an HxWx3 uint8 frame, RGB (or BGR with ``bgr``); landmarks come back in its pixels.
        ``iris=False`` leaves ``MeshFace.iris`` None (the caller may run ``irises`` later, only if needed).
        """
        rgb = img
        self.load()
        tracked = self._roi is not None
        det_score: float | None = None
        face = self._landmarks_in(rgb, self._roi, bgr) if self._roi is not None else None
        if face is None:
            tracked = False
            dets = self.detect(rgb, bgr)
            if not dets:
                self._roi = None
                return None
            box, kps, det_score = max(dets, key=lambda d: float((d[0][2] - d[0][0]) * (d[0][3] - d[0][1])))
            face = self._landmarks_in(rgb, roi_from_points(kps[0], kps[1], tuple(box), FACE_ROI_SCALE), bgr)
            if face is None:
                self._roi = None
                return None
        lm, score = face
        self._roi = roi_from_landmarks(lm)
        return MeshFace(lm, self.irises(rgb, lm, bgr) if iris else None, score, det_score, tracked)

    def _landmarks_in(self, rgb: np.ndarray, roi: Roi, bgr: bool) -> tuple[np.ndarray, float] | None:
        if roi.size < 8:
            return None
        model = self._attention if self._attention is not None else self._landmarks
        assert model is not None
        out = model.run_into(lambda x: roi.crop(rgb, LANDMARK_SIZE, bgr=bgr, out=x[0]))
        logit = float(out["conv_faceflag" if self._attention is not None else "conv2d_31"].reshape(-1)[0])
        score = 1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, logit)))) if logit == logit else math.nan
        if score < self.presence:
            return None
        if self._attention is None:
            return roi.to_frame(out["conv2d_21"].reshape(468, 3), LANDMARK_SIZE), score
        mesh = out["output_mesh_identity"].reshape(468, 3).copy()
        if self.refine_eyes:
            # the eye heads' 71 points refine the mesh's eye and brow points (x, y; z stays the mesh's), as
            # MediaPipe's refine_landmarks does: the iris is then measured against corners from the same head
            for side in ("left", "right"):
                mesh[list(REFINED_EYE_POINTS[side]), :2] = out[f"output_{side}_eye"].reshape(-1, 2)
        lm = roi.to_frame(mesh, LANDMARK_SIZE)
        # "left" is the eye at the image's left on an unmirrored frame (its crop follows landmarks 33-133)
        iris = np.stack([roi.to_frame(out[f"output_{side}_iris"].reshape(5, 2), LANDMARK_SIZE)
                         for side in ("left", "right")])
        self._last = (lm, iris)
        return lm, score

    def irises(self, rgb: np.ndarray, lm: np.ndarray, bgr: bool = False,
               eyes: tuple[int, ...] = (0, 1)) -> np.ndarray | None:
        """Iris points (2, 5, 2) of these landmarks' eyes (image-left eye first), frame pixels. With mesh+iris
        only the ``eyes`` listed are measured (one eye is half the cost), the others' rows are NaN; with the
        attention model both come with the landmarks, whatever ``eyes`` lists."""
        if not eyes or any(k not in (0, 1) for k in eyes):
            raise ValueError(f"eyes must list 0 and/or 1, got {eyes}")
        self.load()
        if self.irises_with_landmarks:  # both came with these landmarks (any other landmarks: not ours)
            if self._last is None or self._last[0] is not lm:
                raise ValueError("with the attention model, irises come only with the last process() landmarks")
            return self._last[1].copy()
        assert self._iris is not None and self._iris_one is not None
        rois: dict[int, Roi] = {}
        for k in eyes:
            a, b = EYE_CORNERS[k]
            p0, p1 = lm[a, :2], lm[b, :2]
            lo, hi = np.minimum(p0, p1), np.maximum(p0, p1)
            roi = roi_from_points(p0, p1, (lo[0], lo[1], hi[0], hi[1]), EYE_ROI_SCALE)
            if roi.size < 4:
                return None
            rois[k] = roi
        order = sorted(rois)

        def fill(x: np.ndarray) -> None:  # the model is trained on one eye: the other crop is mirrored,
            for j, k in enumerate(order):  # as MediaPipe does; both eyes go through in one invocation
                rois[k].crop(rgb, IRIS_SIZE, flip=k == 1, bgr=bgr, out=x[j])

        model = self._iris if len(order) == 2 else self._iris_one
        iris = model.run_into(fill)["output_iris"].reshape(len(order), 5, 3)
        out = np.full((2, 5, 2), np.nan)
        for j, k in enumerate(order):
            out[k] = rois[k].to_frame(iris[j], IRIS_SIZE, flip=k == 1)[:, :2]
        return out


class MediaPipeFaceDetector:
    """``FaceDetector`` face boxes from BlazeFace; the analyzer uses ``mesh`` for the landmark path."""

    name = "mediapipe"
    needs_bgr = True

    def __init__(self, threads: int = 1, landmark_model: str = "attention") -> None:
        self.mesh = FaceMesh(threads=threads, landmark_model=landmark_model)

    def load(self) -> None:
        self.mesh.load()

    def detect(self, img: np.ndarray, min_size: int, max_size: int | None) -> list[Detection]:
        bgr = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        out = []
        for box, kps, score in self.mesh.detect(bgr, bgr=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            if w < min_size * 0.8 or (max_size is not None and w > max_size * 1.25):
                continue
            a, b = (float(kps[0][0]), float(kps[0][1])), (float(kps[1][0]), float(kps[1][1]))
            out.append(Detection((float(box[0]), float(box[1]), w, h), score, (a, b) if a[0] <= b[0] else (b, a)))
        return out
