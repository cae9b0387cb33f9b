"""Face detection for the emotion analyzer: frame normalisation, the ``FaceDetector`` Protocol,
the tuned OpenCV Haar detector (faces and eyes) and DeepFace's detector backends.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

log = logging.getLogger("sidecar.emotion")  # one logger for the whole emotion path

# Packages DeepFace detector backends import (others need only a weights download, which fails
# clearly at load time); checked up front so a missing one is a clear
# error at start-up instead of a stack trace from deep inside DeepFace on the first frame.
DEEPFACE_DETECTOR_PACKAGES: dict[str, tuple[str, ...]] = {
    "mtcnn": ("mtcnn", "tensorflow"),
    "retinaface": ("retinaface", "tensorflow"),
    "dlib": ("dlib",),
    "fastmtcnn": ("facenet_pytorch", "torch"),
    "yolo": ("ultralytics",),  # every yolov8*/v11*/v12* backend
}


# Haar tuning, chosen on ../shared/data/faces and baseline.mp4 (see tests/test_emotion.py).
# frontalface_alt2 rather than _default: _default returned a larger false face than the real one
# on 2 of the 43 photos (img27, img56); alt2 had no false positive on any of them.
FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
EYE_CASCADE = "haarcascade_eye.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 3  # low on purpose: the neighbour count becomes the confidence, the floor filters
# confidence = 1 - exp(-neighbours / K): 10 neighbours -> 0.5. At scale factor 1.1 the largest face
# of every test photo had >= 22 neighbours with alt2; _default's false positives had 4-19.
HAAR_NEIGHBOURS_K = 10 / math.log(2)
MIN_FACE_PX = 24  # smallest face searched at detection scale (the cascade window is 20 px)
EYE_FACE_PX = 112  # the eye band is rescaled so the face is this wide (eyes ~22 px > 20 px window)
EYE_MIN_NEIGHBORS = 2  # with 3, an eye was missed on 6 of the 43 photos; with 2 on img17 (squint) and img62
EYE_BAND = (0.15, 0.6)  # rows of the face box searched for eyes (skips forehead and mouth)
MIN_EYE_FACE_PX = 40  # faces narrower than this (original pixels) are too small to judge the eyes


class DetectorUnavailableError(RuntimeError):
    """The configured face detector cannot run here (a package or weights file is missing)."""



# input normalisation


def to_gray_and_bgr(
    frame: Any, *, color: str = "bgr", need_bgr: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a frame and return (gray uint8, BGR uint8 or None), both C-contiguous.

    Accepts 2-D gray, HxWx1, HxWx3 (BGR or RGB per ``color``), HxWx4 (BGRA/RGBA), any real dtype
    (floats in [0, 1] are scaled to [0, 255], NaN/inf become 0) and non-contiguous views.
    Raises ValueError for anything that is not an image.
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim not in (2, 3):
        raise ValueError(f"frame must be HxW or HxWxC, got ndim={frame.ndim} shape={frame.shape}")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"frame must have 1, 3 or 4 channels, got shape={frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty, shape={frame.shape}")
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    img = _to_uint8(frame)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        gray = np.ascontiguousarray(img)
        return gray, (cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if need_bgr else None)
    img = np.ascontiguousarray(img)  # cv2 rejects views with negative or channel-skipping strides
    code_bgr: int | None
    if img.shape[2] == 4:
        code_gray = cv2.COLOR_RGBA2GRAY if color == "rgb" else cv2.COLOR_BGRA2GRAY
        code_bgr = cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR
    else:
        code_gray = cv2.COLOR_RGB2GRAY if color == "rgb" else cv2.COLOR_BGR2GRAY
        code_bgr = cv2.COLOR_RGB2BGR if color == "rgb" else None
    gray = cv2.cvtColor(img, code_gray)
    bgr = None
    if need_bgr:
        bgr = cv2.cvtColor(img, code_bgr) if code_bgr is not None else img
    return gray, bgr


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.bool_:
        return frame.astype(np.uint8) * 255
    if np.issubdtype(frame.dtype, np.floating):
        f = np.nan_to_num(frame.astype(np.float32, copy=False), nan=0.0, posinf=255.0, neginf=0.0)
        peak = float(f.max()) if f.size else 0.0
        if peak <= 1.0:  # a float image in [0, 1], the usual convention
            f = f * 255.0
        return np.clip(f, 0, 255).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.integer):
        if frame.dtype == np.uint16:  # 16-bit camera or PNG frames
            return (frame >> 8).astype(np.uint8)
        clipped: np.ndarray = np.clip(frame, 0, 255)
        return clipped.astype(np.uint8)
    raise ValueError(f"frame dtype {frame.dtype} is not a real-valued image type")


# --------------------------------------------------------------------------------------------------
# face detectors


class Detection(NamedTuple):
    box: tuple[float, float, float, float]  # x, y, w, h in the pixels of the image searched
    confidence: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # image-left, image-right


class FaceDetector(Protocol):
    name: str
    needs_bgr: bool

    def load(self) -> None: ...

    def detect(self, img: np.ndarray, min_size: int, max_size: int | None) -> list[Detection]: ...


def _haar_confidence(neighbours: float) -> float:
    return 1.0 - math.exp(-float(neighbours) / HAAR_NEIGHBOURS_K)


class HaarFaceDetector:
    """OpenCV Haar cascade called directly (DeepFace's opencv backend also runs an eye cascade on
    every face and uses minNeighbors=10 on the full frame; this is cheaper and tunable)."""

    name = "opencv"
    needs_bgr = False

    def __init__(self) -> None:
        self._cascade: cv2.CascadeClassifier | None = None

    def load(self) -> None:
        if self._cascade is None:
            self._cascade = load_cascade(FACE_CASCADE)

    def detect(self, img: np.ndarray, min_size: int, max_size: int | None) -> list[Detection]:
        self.load()
        assert self._cascade is not None
        if min(img.shape[:2]) < max(min_size, 20):
            return []
        kwargs: dict[str, Any] = {"minSize": (min_size, min_size)}
        if max_size is not None:
            kwargs["maxSize"] = (max_size, max_size)
        faces, neighbours = self._cascade.detectMultiScale2(
            img, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, **kwargs
        )
        return [
            Detection((float(x), float(y), float(w), float(h)), _haar_confidence(n))
            for (x, y, w, h), n in zip(faces, neighbours, strict=False)
        ]


class DeepFaceDetector:
    """Any of DeepFace's detector backends through its detector API (``build_model`` + ``detect_faces``)."""

    needs_bgr = True

    def __init__(self, backend: str) -> None:
        self.name = backend
        self._model: Any = None
        self._failures = 0
        check_deepface_detector(backend)

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            from deepface.modules import modeling

            self._model = modeling.build_model(task="face_detector", model_name=self.name)
        except Exception as err:  # DeepFace raises ValueError/ImportError/download errors alike
            raise DetectorUnavailableError(
                f"face detector {self.name!r} could not be loaded through DeepFace: {err}. "
                "Set MOCKAI_FACE_DETECTOR=opencv to use the built-in Haar detector."
            ) from err

    def detect(self, img: np.ndarray, min_size: int, max_size: int | None) -> list[Detection]:
        self.load()
        try:
            regions = self._model.detect_faces(img)
        except Exception:  # a live worker must survive one bad frame; log, do not spam
            self._failures += 1
            if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
                log.warning("face detector %s failed (%d times)", self.name, self._failures, exc_info=True)
            return []
        out = []
        for r in regions:
            w, h = float(r.w), float(r.h)
            if w < min_size * 0.8 or (max_size is not None and w > max_size * 1.25):
                continue
            eyes = None
            if r.left_eye is not None and r.right_eye is not None:
                # DeepFace names eyes from the person's view; keep image-left first
                a, b = (
                    (float(r.left_eye[0]), float(r.left_eye[1])),
                    (float(r.right_eye[0]), float(r.right_eye[1])),
                )
                eyes = (a, b) if a[0] <= b[0] else (b, a)
            conf = 1.0 if r.confidence is None else float(np.clip(r.confidence, 0.0, 1.0))
            out.append(Detection((float(r.x), float(r.y), w, h), conf, eyes))
        return out


def check_deepface_detector(backend: str) -> None:
    """Raise DetectorUnavailableError now if a DeepFace detector backend cannot run here."""
    if importlib.util.find_spec("deepface") is None:
        raise DetectorUnavailableError(
            f"face detector {backend!r} needs the deepface package, which is not installed"
        )
    from deepface.modules.modeling import AVAILABLE_MODELS

    known = AVAILABLE_MODELS["face_detector"]
    if backend not in known:
        raise DetectorUnavailableError(
            f"unknown face detector {backend!r}; DeepFace offers: {', '.join(sorted(known))}"
        )
    needs = DEEPFACE_DETECTOR_PACKAGES.get("yolo" if backend.startswith("yolo") else backend, ())
    missing = [p for p in needs if importlib.util.find_spec(p) is None]
    if missing:
        raise DetectorUnavailableError(
            f"face detector {backend!r} needs the package(s) {', '.join(missing)}, which are not installed "
            f"(pip install {' '.join(missing)}), or set MOCKAI_FACE_DETECTOR=opencv"
        )


def make_detector(name: str, threads: int = 1, landmark_model: str = "attention") -> FaceDetector:
    """The detector named by MOCKAI_FACE_DETECTOR: mediapipe (our LiteRT landmark pipeline, never
    DeepFace's mediapipe backend, with ``landmark_model``), opencv/haar, or any DeepFace backend."""
    name = name.strip().lower()
    if name in ("opencv", "haar"):
        return HaarFaceDetector()
    if name == "mediapipe":
        from sidecar.face_mesh import MediaPipeFaceDetector, mediapipe_modules

        mediapipe_modules()  # a missing wheel or model file fails now, at start-up
        return MediaPipeFaceDetector(threads=threads, landmark_model=landmark_model)
    return DeepFaceDetector(name)


def load_cascade(file_name: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, file_name)  # type: ignore[attr-defined]  # not in cv2's stubs
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise DetectorUnavailableError(
            f"Haar cascade {path} is missing; opencv 4.x wheels ship it (opencv 5 wheels do not)"
        )
    return cascade


# --------------------------------------------------------------------------------------------------


def find_eyes(
    cascade: cv2.CascadeClassifier | None, gray: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[tuple[tuple[float, float], tuple[float, float]] | None, int]:
    """Eyes in the upper face band, one per half. Returns (eye centres in face units or None, count)."""
    x, y, w, h = box
    if w < MIN_EYE_FACE_PX or cascade is None:
        return None, 0
    top, bottom = y + int(h * EYE_BAND[0]), y + int(h * EYE_BAND[1])
    band = gray[top:bottom, x : x + w]
    if band.size == 0:
        return None, 0
    r = EYE_FACE_PX / w
    band = cv2.resize(
        band,
        (EYE_FACE_PX, max(1, round(band.shape[0] * r))),
        interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR,
    )
    if band.shape[0] < 20:
        return None, 0
    cands = cascade.detectMultiScale(
        band, 1.1, EYE_MIN_NEIGHBORS, minSize=(20, 20), maxSize=(EYE_FACE_PX // 2, EYE_FACE_PX // 2)
    )
    halves: list[tuple[float, float] | None] = [None, None]
    best_area = [0.0, 0.0]
    for ex, ey, ew, eh in cands:
        u = (ex + ew / 2.0) / r / w
        v = (top - y + (ey + eh / 2.0) / r) / h
        side = 0 if u < 0.5 else 1
        if ew * eh > best_area[side]:
            best_area[side] = float(ew * eh)
            halves[side] = (u, v)
    found = sum(e is not None for e in halves)
    if halves[0] is not None and halves[1] is not None:
        return (halves[0], halves[1]), found
    return None, found

