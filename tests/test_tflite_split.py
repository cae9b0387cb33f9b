"""Tests for sidecar.tflite_split: the numpy custom ops against a line-by-line transcription of MediaPipe's
C++ kernels (scalar loops), and the split model against the graph's own structure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sidecar.face_mesh import ATTENTION_MODEL, mediapipe_modules
from sidecar.tflite_split import (
    SplitModel,
    landmarks_to_transform_matrix,
    transform_landmarks,
    transform_tensor_bilinear,
)

RNG = np.random.default_rng(7)
EYE_OPTIONS = {"left_rotation_idx": 3, "right_rotation_idx": 9, "output_height": 16, "output_width": 16,
               "scale_x": 1.5, "scale_y": 1.5, "subset_idxs": [3, 4, 5, 6, 7, 8, 9, 10], "target_rotation_radians": 0.0}


def mat_mul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[r][k] * b[k][c] for k in range(len(b))) for c in range(len(b[0]))] for r in range(len(a))]


def reference_l2tm(lm: np.ndarray, o: dict) -> np.ndarray:
    """LandmarksToTransformMatrixV2, as the C++ reads (Mat4 products in the same order)."""
    p = lm[0].tolist()
    left, right = p[o["left_rotation_idx"]], p[o["right_rotation_idx"]]
    r = o["target_rotation_radians"] - math.atan2(right[1] - left[1], right[0] - left[0])
    pts = [(p[i][0], p[i][1], 1.0) for i in o["subset_idxs"]]
    rot = [[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]]
    inv = [[math.cos(-r), -math.sin(-r), 0], [math.sin(-r), math.cos(-r), 0], [0, 0, 1]]
    rp = [[sum(rot[i][k] * v[k] for k in range(3)) for i in range(3)] for v in pts]
    xmax, ymax = max(v[0] for v in rp), max(v[1] for v in rp)
    xmin, ymin = min(v[0] for v in rp), min(v[1] for v in rp)
    w, h = xmax - xmin, ymax - ymin
    mid = [(xmin + xmax) / 2, (ymin + ymax) / 2, 1.0]
    cx, cy = (sum(inv[i][k] * mid[k] for k in range(3)) for i in range(2))
    t = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    shift = [[1, 0, 0, cx], [0, 1, 0, cy], [0, 0, 1, 0], [0, 0, 0, 1]]
    rr = -r
    rotation = [[math.cos(rr), -math.sin(rr), 0, 0], [math.sin(rr), math.cos(rr), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    sx, sy = o["scale_x"] * w / o["output_width"], o["scale_y"] * h / o["output_height"]
    scale = [[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    shift2 = [[1, 0, 0, -o["output_width"] / 2], [0, 1, 0, -o["output_height"] / 2], [0, 0, 1, 0], [0, 0, 0, 1]]
    for m in (shift, rotation, scale, shift2):
        t = mat_mul(t, m)
    return np.array(t, np.float32)[None]


def reference_ttb(feat: np.ndarray, m: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """TransformTensorBilinearV2, loop for loop."""
    _, h, w, ch = feat.shape
    x_t, y_t = m[0, 0, :4].astype(np.float64).tolist(), m[0, 1, :4].astype(np.float64).tolist()
    x_t[3] += x_t[0] * 0.5 + x_t[1] * 0.5 - 0.5
    y_t[3] += y_t[0] * 0.5 + y_t[1] * 0.5 - 0.5
    out = np.zeros((1, oh, ow, ch), np.float32)
    for oy in range(oh):
        for ox in range(ow):
            tx = x_t[0] * ox + x_t[1] * oy + x_t[3]
            ty = y_t[0] * ox + y_t[1] * oy + y_t[3]
            if tx < 0 or tx > w - 1 or ty < 0 or ty > h - 1:
                continue

            def read(yy: int, xx: int, c: int) -> float:
                return 0.0 if yy < 0 or xx < 0 or yy >= h or xx >= w else float(feat[0, yy, xx, c])

            fx, fy = math.floor(tx), math.floor(ty)
            rc, lc = tx - fx, ty - fy
            for c in range(ch):
                upper = (1 - rc) * read(fy, fx, c) + rc * read(fy, fx + 1, c)
                lower = (1 - rc) * read(fy + 1, fx, c) + rc * read(fy + 1, fx + 1, c)
                out[0, oy, ox, c] = lc * lower + (1 - lc) * upper
    return out


def test_landmarks_to_transform_matrix_matches_the_kernel() -> None:
    for _ in range(5):
        lm = (RNG.random((1, 12, 3)) * 48).astype(np.float32)
        ours, ref = landmarks_to_transform_matrix(lm, EYE_OPTIONS), reference_l2tm(lm, EYE_OPTIONS)
        assert ours.shape == (1, 4, 4)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_transform_tensor_bilinear_matches_the_kernel_inside_and_at_the_edges() -> None:
    feat = RNG.standard_normal((1, 12, 10, 3)).astype(np.float32)
    for _ in range(4):
        lm = (RNG.random((1, 12, 3)) * 14 - 2).astype(np.float32)  # crops that reach past the map's edges
        m = landmarks_to_transform_matrix(lm, {**EYE_OPTIONS, "output_height": 6, "output_width": 5})
        ours = transform_tensor_bilinear(feat, m, {"output_height": 6, "output_width": 5})
        np.testing.assert_allclose(ours, reference_ttb(feat, m, 6, 5), rtol=1e-5, atol=1e-5)
    far = np.eye(4, dtype=np.float32)[None]
    far[0, 0, 3] = 100.0  # every sample off the map: zeros
    assert not transform_tensor_bilinear(feat, far, {"output_height": 3, "output_width": 3}).any()


def test_transform_landmarks_applies_the_affine_part() -> None:
    m = np.eye(4, dtype=np.float32)[None]
    m[0, 0, :] = [2, 0, 0, 1]
    m[0, 1, :] = [0, 3, 0, -1]
    out = transform_landmarks(np.array([[[1.0, 2.0], [0.0, 0.0]]], np.float32), m, {})
    np.testing.assert_allclose(out, [[[3.0, 5.0], [1.0, -1.0]]])


@pytest.fixture(scope="module")
def split() -> SplitModel:
    return SplitModel(mediapipe_modules() / ATTENTION_MODEL, ["output_mesh_identity", "output_left_iris"])


def test_split_model_runs_only_what_the_outputs_need(split: SplitModel) -> None:
    kinds = sorted(h.kind for ops in split._host.values() for h in ops)
    # one eye wanted: its crop matrix, its feature crop and its iris back-transform; lips and the other eye
    # are left out of the graph
    assert kinds == ["Landmarks2TransformMatrix", "TransformLandmarks", "TransformTensorBilinear"]
    x = RNG.random((192, 192, 3)).astype(np.float32)

    def fill(t: np.ndarray) -> None:
        t[0] = x

    a, b = split.run_into(fill), split.run_into(fill)
    assert set(a) == {"output_mesh_identity", "output_left_iris"}
    assert a["output_mesh_identity"].size == 1404 and a["output_left_iris"].size == 10
    assert all(np.array_equal(a[k], b[k]) for k in a)  # deterministic
    with pytest.raises(ValueError, match="no tensor no_such_tensor"):
        SplitModel(mediapipe_modules() / ATTENTION_MODEL, ["no_such_tensor"])
