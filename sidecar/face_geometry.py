"""Geometry on MediaPipe's 468 face landmarks (pure numpy/cv2): head pose, gaze direction, eye aspect
ratio, mouth shape, the aligned gray crop for the emotion model, and a perspective yaw/pitch warp for tests.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

# Landmark indices of MediaPipe's canonical face mesh, image-left first on an unmirrored frame
NOSE_TIP, CHIN = 1, 152
EYE_OUTER = (33, 263)
MOUTH_CORNERS = (61, 291)
LIP_INNER = (13, 14)  # upper, lower
# each eye left to right along the image: (corner, corner) and the 6 EAR points p1..p6
EYE_LINE = ((33, 133), (362, 263))
EAR_POINTS = ((33, 160, 158, 133, 153, 144), (362, 385, 387, 263, 373, 380))
# A generic 3D face (millimetres; x right, y down, z away from the camera; nose tip at the origin),
# the usual 6-point model for solvePnP head pose
POSE_INDICES = (NOSE_TIP, CHIN, EYE_OUTER[0], EYE_OUTER[1], MOUTH_CORNERS[0], MOUTH_CORNERS[1])
POSE_MODEL = np.array(
    [
        (0.0, 0.0, 0.0),
        (0.0, 63.6, 12.5),
        (-43.3, -32.7, 26.0),
        (43.3, -32.7, 26.0),
        (-28.9, 28.9, 24.1),
        (28.9, 28.9, 24.1),
    ],
    dtype=np.float64,
)
# The generic model reads frontal faces as looking this far up (mean on ../shared/data/faces): removed
POSE_PITCH_BIAS_DEG = 0.0
# The iris moves (eye width) x offset / EYE_WIDTH_PER_RADIUS ... : eyeball radius ~12 mm, eye ~30 mm wide
EYE_WIDTH_PER_RADIUS = 2.5
IRIS_PITCH_BIAS = 0.0  # iris centre below the corner line, in eye widths, of a level gaze (measured)
# Aligned crop for FER2013: the Haar box plus 10 % margin it was trained on is ~2.9 inter-ocular distances
# wide with the eye line at 41 % of its height (measured on the photos)
CROP_IOD = 2.9
CROP_EYE_V = 0.41
# Mouth: width in inter-ocular distances of a neutral and of a broad smile (measured on the photos)
MOUTH_NEUTRAL_W = 0.8
MOUTH_SMILE_W = 1.1


class HeadPose(NamedTuple):
    yaw: float  # degrees, + = face turned toward the image's right (relative to the line to the camera)
    pitch: float  # degrees, + = looking down
    roll: float  # degrees, + = tilted clockwise in the image


class Gaze(NamedTuple):
    yaw: float  # degrees, + = toward the image's right; 0 = at the camera
    pitch: float  # degrees, + = down
    iris: tuple[float, float]  # iris centre along each eye line (image-left eye first), 0-1


def _angles(v: np.ndarray) -> tuple[float, float]:
    """Yaw/pitch (degrees) of a direction in camera coordinates pointing back toward the camera."""
    yaw = math.degrees(math.atan2(float(v[0]), float(-v[2])))
    pitch = math.degrees(math.atan2(float(v[1]), math.hypot(float(v[0]), float(v[2]))))
    return yaw, pitch


def head_pose(lm: np.ndarray, frame_w: int, frame_h: int) -> HeadPose | None:
    """Head yaw/pitch/roll by cv2.solvePnP of 6 landmarks on a generic face, nominal camera (focal = width).

    Yaw and pitch are measured from the line between the face and the camera, so a face anywhere in the
    frame that points at the lens reads 0. None when solvePnP fails.
    """
    pts = np.ascontiguousarray(lm[list(POSE_INDICES), :2], dtype=np.float64)
    f = float(frame_w)
    cam = np.array([[f, 0, frame_w / 2.0], [0, f, frame_h / 2.0], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(POSE_MODEL, pts, cam, None, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(POSE_MODEL, pts, cam, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok or not np.all(np.isfinite(rvec)) or float(tvec[2, 0]) <= 0:
        return None
    rot, _ = cv2.Rodrigues(rvec)
    forward = rot @ np.array([0.0, 0.0, -1.0])  # out of the face, toward the camera when frontal
    to_camera = -tvec[:, 0] / np.linalg.norm(tvec[:, 0])
    fy, fp = _angles(forward)
    cy, cp = _angles(to_camera)
    across = rot @ np.array([1.0, 0.0, 0.0])
    roll = math.degrees(math.atan2(float(across[1]), float(across[0])))
    return HeadPose(_wrap(fy - cy), _wrap(fp - cp - POSE_PITCH_BIAS_DEG), _wrap(roll))


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def iris_offsets(lm: np.ndarray, iris: np.ndarray) -> list[tuple[float, float]]:
    """Per eye (image-left first): iris centre along the corner line (0-1) and across it (eye widths, + = down)."""
    out = []
    for (a, b), pts in zip(EYE_LINE, iris, strict=True):
        p0, p1 = lm[a, :2], lm[b, :2]
        v = p1 - p0
        n2 = float(v @ v)
        if n2 <= 1e-9:
            out.append((0.5, 0.0))
            continue
        rel = pts[0] - p0
        along = float(rel @ v) / n2
        across = float(rel[0] * -v[1] + rel[1] * v[0]) / n2  # the normal (-vy, vx) points down when level
        out.append((along, across))
    return out


def gaze_direction(pose: HeadPose, lm: np.ndarray, iris: np.ndarray) -> Gaze:
    """Gaze = head pose + each eye's rotation from its iris offset (both eyes averaged), in degrees."""
    offs = iris_offsets(lm, iris)
    along = float(np.mean([o[0] for o in offs]))
    across = float(np.mean([o[1] for o in offs]))
    eye_yaw = math.degrees(math.asin(float(np.clip((along - 0.5) * EYE_WIDTH_PER_RADIUS, -1, 1))))
    eye_pitch = math.degrees(math.asin(float(np.clip((across - IRIS_PITCH_BIAS) * EYE_WIDTH_PER_RADIUS, -1, 1))))
    return Gaze(pose.yaw + eye_yaw, pose.pitch + eye_pitch, (offs[0][0], offs[1][0]))


def eye_aspect_ratios(lm: np.ndarray) -> tuple[float, float]:
    """Eye aspect ratio (lid gaps / 2 x eye width) of each eye, image-left first; ~0.3 open, < 0.15 shut."""
    out = []
    for p1, p2, p3, p4, p5, p6 in EAR_POINTS:
        width = float(np.linalg.norm(lm[p1, :2] - lm[p4, :2]))
        gaps = float(np.linalg.norm(lm[p2, :2] - lm[p6, :2]) + np.linalg.norm(lm[p3, :2] - lm[p5, :2]))
        out.append(gaps / (2.0 * width) if width > 1e-9 else 0.0)
    return out[0], out[1]


def eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of each eye (mid-point of its corners), image-left first."""
    (a, b), (c, d) = EYE_LINE
    return (lm[a, :2] + lm[b, :2]) / 2.0, (lm[c, :2] + lm[d, :2]) / 2.0


def mouth_shape(lm: np.ndarray) -> tuple[float, float]:
    """(smile 0-1 from the mouth width against a neutral one, lip gap / mouth width)."""
    left, right = eye_centres(lm)
    iod = float(np.linalg.norm(right - left))
    width = float(np.linalg.norm(lm[MOUTH_CORNERS[1], :2] - lm[MOUTH_CORNERS[0], :2]))
    gap = float(np.linalg.norm(lm[LIP_INNER[1], :2] - lm[LIP_INNER[0], :2]))
    if iod <= 1e-9 or width <= 1e-9:
        return 0.0, 0.0
    smile = float(np.clip((width / iod - MOUTH_NEUTRAL_W) / (MOUTH_SMILE_W - MOUTH_NEUTRAL_W), 0.0, 1.0))
    return smile, gap / width


def aligned_crop(gray: np.ndarray, lm: np.ndarray, size: int) -> np.ndarray:
    """A size x size gray crop with the eyes level at a fixed place and scale (edges replicated)."""
    left, right = eye_centres(lm)
    d = right - left
    iod = float(np.hypot(d[0], d[1]))
    angle = math.atan2(float(d[1]), float(d[0]))
    k = iod * CROP_IOD / size  # frame pixels per crop pixel
    c, s = math.cos(angle) * k, math.sin(angle) * k
    mid = (left + right) / 2.0
    a = np.array([[c, -s], [s, c]])
    t = mid - a @ np.array([size / 2.0, CROP_EYE_V * size])
    m = np.hstack([a, t[:, None]])
    interp = cv2.INTER_AREA if k > 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(gray, m, (size, size), flags=interp | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def rotate_face_image(img: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Warp a photo as if its (flat) content were turned by yaw/pitch degrees about the image centre.

    Signs follow pipeline/records.py: yaw + turns the face toward the image's right (its right half
    recedes), pitch + tilts it down (its lower half recedes). Pinhole camera, focal = image width, the
    plane at that distance, so (0, 0) returns the image unchanged. Same size out, black where nothing maps.
    A planar warp, not a 3D head: the landmark model still reads it as a turned face (tests/test_face_mesh.py).
    """
    h, w = img.shape[:2]
    f = float(w)
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    r_yaw = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    r_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rot = r_pitch @ r_yaw
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    plane = np.c_[src - [w / 2.0, h / 2.0], np.zeros(4)]  # x right, y down, z away
    q = plane @ rot.T + [0.0, 0.0, f]
    dst = np.c_[f * q[:, 0] / q[:, 2] + w / 2.0, f * q[:, 1] / q[:, 2] + h / 2.0]
    hom = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    return cv2.warpPerspective(img, hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
