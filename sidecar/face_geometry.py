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
# A generic 3D face for solvePnP: these landmarks of MediaPipe's canonical face model
# (mediapipe/modules/face_geometry/data/canonical_face_model.obj, Apache-2.0; centimetres), turned
# into camera axes: x right, y down, z away from the camera (the obj has y up, z toward the viewer)
POSE_INDICES = (NOSE_TIP, CHIN, EYE_OUTER[0], EYE_OUTER[1], MOUTH_CORNERS[0], MOUTH_CORNERS[1], 133, 362, 168)
POSE_MODEL = np.array(
    [
        (0.0, 1.127, -7.476),
        (0.0, 9.403, -4.264),
        (-4.446, -2.664, -3.173),
        (4.446, -2.664, -3.173),
        (-2.456, 4.343, -4.284),
        (2.456, 4.343, -4.284),
        (-1.856, -2.585, -3.758),
        (1.856, -2.585, -3.758),
        (0.0, -3.271, -5.236),
    ],
    dtype=np.float64,
)
# Eye rotation = asin(iris offset in eye widths x EYE_WIDTH_PER_RADIUS): the eye opening (~30 mm) is
# about 2.5 eyeball radii (~12 mm) wide
EYE_WIDTH_PER_RADIUS = 2.5
# Iris centre below the eye-corner line (eye widths) of a gaze level with the camera. 0: on the photos
# the iris sits 0.057 above it while the head pitches 8 deg down, which is gaze pitch ~0 (at the lens)
IRIS_PITCH_BIAS = 0.0
# Aligned crop for FER2013, matching the Haar crop it ran on before: the alt2 box is 2.7 inter-ocular
# distances (eye-corner midpoints) wide with the eye line at 41 % of its height (median on
# ../shared/data/faces); plus the 10 % margin on each side that is 3.2 IODs with the eyes at 42.5 %
CROP_IOD = 3.2
CROP_EYE_V = 0.425
# Mouth, in inter-ocular distances (IOD), on ../shared/data/faces against FER's "happy": the corners'
# lift above the lip centre is -0.05-0.03 on neutral faces and 0.04-0.16 on smiles (correlation with
# happy 0.84); the width 0.76-0.86 neutral, 0.94-1.14 on broad smiles (0.67)
MOUTH_NEUTRAL_LIFT, MOUTH_SMILE_LIFT = 0.0, 0.12
MOUTH_NEUTRAL_W, MOUTH_SMILE_W = 0.8, 1.05
MOUTH_LIFT_WEIGHT = 0.6  # the smile score weighs the corner lift 0.6 and the width 0.4


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
    """Head yaw/pitch/roll by cv2.solvePnP of 9 landmarks on a generic face, nominal camera (focal = width).

    Yaw and pitch are measured from the line between the face and the camera, so a face anywhere in the
    frame that points at the lens reads 0. None when solvePnP fails.
    """
    pts = np.ascontiguousarray(lm[list(POSE_INDICES), :2], dtype=np.float64)
    f = float(frame_w)
    cam = np.array([[f, 0, frame_w / 2.0], [0, f, frame_h / 2.0], [0, 0, 1]], dtype=np.float64)
    # SQPnP finds the global minimum (the iterative solver alone sometimes lands on a flipped face)
    ok, rvec, tvec = cv2.solvePnP(POSE_MODEL, pts, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok or not np.all(np.isfinite(rvec)) or float(tvec[2, 0]) <= 0:
        return None
    rot, _ = cv2.Rodrigues(rvec)
    forward = rot @ np.array([0.0, 0.0, -1.0])  # out of the face, toward the camera when frontal
    if forward[2] >= 0:  # facing away from the camera: not a solution for a visible face
        return None
    to_camera = -tvec[:, 0] / np.linalg.norm(tvec[:, 0])
    fy, fp = _angles(forward)
    cy, cp = _angles(to_camera)
    across = rot @ np.array([1.0, 0.0, 0.0])
    roll = math.degrees(math.atan2(float(across[1]), float(across[0])))
    return HeadPose(_wrap(fy - cy), _wrap(fp - cp), _wrap(roll))


def _clamp(v: float, lo: float, hi: float) -> float:
    """v limited to [lo, hi] (NaN stays NaN, as with np.clip); a scalar np.clip costs ~10x more."""
    return lo if v < lo else hi if v > hi else v


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


def eye_weights(lm: np.ndarray) -> tuple[float, float]:
    """How much each eye (image-left first) counts in the gaze: its corner-to-corner width squared, so a
    frontal face weighs both alike while a turned head leans on the nearer eye. The farther eye is
    foreshortened (fewer pixels for the iris model) and half hidden by the nose bridge; its iris is the
    less reliable one (on the harness's turned faces it is the eye whose reading flips)."""
    w = [float(np.sum((lm[b, :2] - lm[a, :2]) ** 2)) for a, b in EYE_LINE]
    total = w[0] + w[1]
    return (0.5, 0.5) if total <= 1e-9 else (w[0] / total, w[1] / total)


def gaze_direction(pose: HeadPose, lm: np.ndarray, iris: np.ndarray) -> Gaze:
    """Gaze = head pose + the eyes' rotation from their iris offsets (weighted by ``eye_weights``), degrees."""
    return gaze_from_offsets(pose, lm, iris_offsets(lm, iris))


def gaze_from_offsets(pose: HeadPose, lm: np.ndarray, offs: list[tuple[float, float]]) -> Gaze:
    """``gaze_direction`` from each eye's ``iris_offsets`` (along, across), e.g. one of them read a frame
    earlier: the offsets are relative to the eye corners, so they hold while the head moves."""
    w0, w1 = eye_weights(lm)
    along = w0 * offs[0][0] + w1 * offs[1][0]
    across = w0 * offs[0][1] + w1 * offs[1][1]
    eye_yaw = math.degrees(math.asin(_clamp((along - 0.5) * EYE_WIDTH_PER_RADIUS, -1.0, 1.0)))
    eye_pitch = math.degrees(math.asin(_clamp((across - IRIS_PITCH_BIAS) * EYE_WIDTH_PER_RADIUS, -1.0, 1.0)))
    return Gaze(pose.yaw + eye_yaw, pose.pitch + eye_pitch, (offs[0][0], offs[1][0]))


def eye_contact(yaw: float, pitch: float, yaw_limit: float, pitch_limit: float) -> tuple[bool, float]:
    """(eye contact: gaze within both limits, score 0-1: the margin, > 0.5 exactly when eye contact)."""

    def part(v: float, limit: float) -> float:
        return abs(v) / limit if limit > 0 else (0.0 if v == 0 else math.inf)

    ratio = max(part(yaw, yaw_limit), part(pitch, pitch_limit))  # 1 = at the nearer limit
    contact = bool(ratio <= 1.0)
    score = min(1.0, max(0.0, 1.0 - ratio / 2.0))
    if contact:
        score = max(score, 0.5001)  # exactly at a limit eye contact still holds: keep the score above 0.5
    return contact, score


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
    """(smile 0-1: corner lift and mouth width against a neutral mouth, lip gap / mouth width)."""
    left, right = eye_centres(lm)
    d = right - left
    iod = float(np.hypot(d[0], d[1]))
    width = float(np.linalg.norm(lm[MOUTH_CORNERS[1], :2] - lm[MOUTH_CORNERS[0], :2]))
    gap = float(np.linalg.norm(lm[LIP_INNER[1], :2] - lm[LIP_INNER[0], :2]))
    if iod <= 1e-9 or width <= 1e-9:
        return 0.0, 0.0
    down = np.array([-d[1], d[0]]) / iod  # the face's "down" axis (perpendicular to the eye line)
    centre = (lm[LIP_INNER[0], :2] + lm[LIP_INNER[1], :2]) / 2.0
    corners = (lm[MOUTH_CORNERS[0], :2] + lm[MOUTH_CORNERS[1], :2]) / 2.0
    lift = float((centre - corners) @ down) / iod  # + = corners above the lip centre
    lift_t = _clamp((lift - MOUTH_NEUTRAL_LIFT) / (MOUTH_SMILE_LIFT - MOUTH_NEUTRAL_LIFT), 0.0, 1.0)
    width_t = _clamp((width / iod - MOUTH_NEUTRAL_W) / (MOUTH_SMILE_W - MOUTH_NEUTRAL_W), 0.0, 1.0)
    smile = MOUTH_LIFT_WEIGHT * float(lift_t) + (1.0 - MOUTH_LIFT_WEIGHT) * float(width_t)
    return smile, gap / width


def aligned_crop(img: np.ndarray, lm: np.ndarray, size: int) -> np.ndarray:
    """A size x size gray crop with the eyes level at a fixed place and scale (edges replicated).

    ``img`` is gray, or BGR: then only the pixels the crop samples are converted to gray (the same
    values as converting the whole frame first, for a fraction of the cost)."""
    left, right = eye_centres(lm)
    d = right - left
    iod = float(np.hypot(d[0], d[1]))
    angle = math.atan2(float(d[1]), float(d[0]))
    # warp at an integer multiple of the size (about 1 frame pixel per sample), then area-average down:
    # warpAffine alone would alias a large face sampled at 64 x 64
    over = max(1, int(iod * CROP_IOD / size))
    n = size * over
    k = iod * CROP_IOD / n  # frame pixels per warped pixel
    c, s = math.cos(angle) * k, math.sin(angle) * k
    mid = (left + right) / 2.0
    a = np.array([[c, -s], [s, c]])
    t = mid - a @ np.array([n / 2.0 - 0.5, CROP_EYE_V * n - 0.5])
    if img.ndim == 3:
        img, t = _gray_footprint(img, a, t, n)
    m = np.hstack([a, t[:, None]])
    out = cv2.warpAffine(img, m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out if over == 1 else cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


def _gray_footprint(bgr: np.ndarray, a: np.ndarray, t: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gray of the part of ``bgr`` an n x n warp (pixel p -> a @ p + t) reads, and t moved into it.

    The part spans the warped square's corners plus the next pixel bilinear reads, clipped to the frame,
    so replicating its edges reads exactly the frame's edge pixels where the crop leaves the frame."""
    h, w = bgr.shape[:2]
    corners = np.array([[0.0, 0.0], [n - 1.0, 0.0], [0.0, n - 1.0], [n - 1.0, n - 1.0]]) @ a.T + t
    lo = np.floor(corners.min(0)) - 1
    hi = np.floor(corners.max(0)) + 3
    x0, y0 = int(_clamp(float(lo[0]), 0, w - 1)), int(_clamp(float(lo[1]), 0, h - 1))
    x1, y1 = int(_clamp(float(hi[0]), x0 + 1, w)), int(_clamp(float(hi[1]), y0 + 1, h))
    gray = cv2.cvtColor(bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)  # a row-strided view: cv2 takes it
    return gray, t - np.array([x0, y0], dtype=np.float64)


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-axis rotation turning a face's forward direction (0, 0, -1) to the given yaw/pitch."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    r_yaw = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    r_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rot: np.ndarray = r_pitch @ r_yaw
    return rot


def rotate_face_image(
    img: np.ndarray, yaw_deg: float, pitch_deg: float, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """Warp a photo so its face looks turned by yaw/pitch degrees (for tests and validity checks).

    Signs follow pipeline/records.py: yaw + turns the face toward the image's right, pitch + tilts it
    down. Without ``landmarks`` the face's 468 landmarks are found with ``sidecar.face_mesh`` first; with
    a face, its mesh (x, y and the landmark model's depth z) is rotated in 3D about a point behind the
    face and the photo is warped triangle by triangle (far triangles first, so the nose hides the cheek):
    the nose moves toward the turn as on a real head, and the eyes move with the face (head and eyes
    turned together). Without a face it falls back to ``rotate_image_plane``. Same size out.
    """
    if landmarks is None:
        from sidecar.face_mesh import FaceMesh  # lazy: only the test helpers need the models here

        bgr = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        face = FaceMesh(landmark_model="mesh+iris").process(np.ascontiguousarray(bgr[:, :, :3]), bgr=True)
        if face is None:
            return rotate_image_plane(img, yaw_deg, pitch_deg)
        landmarks = face.landmarks
    return _rotate_mesh(img, np.asarray(landmarks, dtype=np.float64), _rotation(yaw_deg, pitch_deg))


def _rotate_mesh(img: np.ndarray, lm: np.ndarray, rot: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x0, y0 = lm[:, :2].min(0)
    x1, y1 = lm[:, :2].max(0)
    face_w = float(x1 - x0)
    # fixed anchors: a ring 35 % of the face size outside it, and the image border; the face moves inside
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    ring = [(cx + (x1 - x0) * 0.85 * math.cos(a), cy + (y1 - y0) * 0.85 * math.sin(a))
            for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    border = [(0, 0), (w / 2, 0), (w - 1, 0), (w - 1, h / 2), (w - 1, h - 1), (w / 2, h - 1), (0, h - 1), (0, h / 2)]
    pivot = np.array([cx, cy, float(np.median(lm[:, 2])) + 0.5 * face_w])  # the head turns about its middle
    moved = (lm - pivot) @ rot.T + pivot
    src = np.vstack([lm[:, :2], ring, border]).astype(np.float64)
    dst = np.vstack([moved[:, :2], ring, border]).astype(np.float64)
    depth = np.concatenate([moved[:, 2], np.full(len(ring) + len(border), np.inf)])
    subdiv = cv2.Subdiv2D((-1, -1, w + 2, h + 2))
    index: dict[tuple[float, float], int] = {}
    for k, (px, py) in enumerate(src):
        px, py = float(np.clip(px, 0, w - 1)), float(np.clip(py, 0, h - 1))
        src[k] = (px, py)
        index.setdefault((round(px, 3), round(py, 3)), k)
        subdiv.insert((px, py))
    tris: list[list[int]] = []
    for t in subdiv.getTriangleList():
        found = [index.get((round(float(t[2 * j]), 3), round(float(t[2 * j + 1]), 3))) for j in range(3)]
        ids = [k for k in found if k is not None]
        if len(ids) == 3:
            tris.append(ids)
    tris.sort(key=lambda ids: -float(np.mean([depth[i] if math.isfinite(depth[i]) else 1e9 for i in ids])))
    out = img.copy()
    for ids in tris:
        s3, d3 = src[ids].astype(np.float32), dst[ids].astype(np.float32)
        bx, by, bw, bh = cv2.boundingRect(d3)
        bx0, by0, bx1, by1 = max(bx, 0), max(by, 0), min(bx + bw, w), min(by + bh, h)
        if bx1 <= bx0 or by1 <= by0:
            continue
        origin = np.array([bx0, by0], dtype=np.float32)
        m = cv2.getAffineTransform(s3, d3 - origin)
        patch = cv2.warpAffine(img, m, (bx1 - bx0, by1 - by0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
        cv2.fillConvexPoly(mask, np.round(d3 - origin).astype(np.int32), (1,))
        region = out[by0:by1, bx0:bx1]
        region[mask.astype(bool)] = patch[mask.astype(bool)]
    return out


def rotate_image_plane(img: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Perspective warp of the whole (flat) photo turned by yaw/pitch about the image centre.

    Pinhole camera, focal = image width, plane at that distance, so (0, 0) returns the image unchanged.
    A flat photo has no depth: the landmark model reads a 30 deg warp as only ~5-10 deg of head yaw
    (nose still centred between the eyes), so tests of head pose use ``rotate_face_image``.
    """
    h, w = img.shape[:2]
    f = float(w)
    rot = _rotation(yaw_deg, pitch_deg)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    plane = np.c_[src - [w / 2.0, h / 2.0], np.zeros(4)]  # x right, y down, z away
    q = plane @ rot.T + [0.0, 0.0, f]
    dst = np.c_[f * q[:, 0] / q[:, 2] + w / 2.0, f * q[:, 1] / q[:, 2] + h / 2.0]
    hom = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    return cv2.warpPerspective(img, hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
