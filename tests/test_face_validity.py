"""The face validity harness (sidecar/face_validity.py, `python -m pipeline.evaluate face`) on real photos
and video frames: media and labels written as promised, the warp's sign conventions, and the agreement
figures it reports for the detectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline import evaluate
from sidecar import face_validity as fv
from sidecar.face_geometry import rotate_image_plane

DETECTORS = ("mediapipe", "opencv")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("face_validity")
    res = fv.run(shared_data, out, DETECTORS, limit=2, video_frames=1, seed=0, log=lambda _m: None)
    res["out"] = out
    return res


def _by_condition(res: dict[str, Any], detector: str) -> dict[str, list[dict[str, Any]]]:
    rows = {r["id"]: r for r in res["results"][detector]["samples"]}
    out: dict[str, list[dict[str, Any]]] = {}
    for s in res["manifest"]["samples"]:
        out.setdefault(s["condition"], []).append(rows[s["id"]])
    return out


def test_media_and_manifest_written(harness: dict[str, Any]) -> None:
    out: Path = harness["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    samples = manifest["samples"]
    sources = {s["source"] for s in samples}
    # 2 photos + one frame of each of the two clips, every condition of each
    assert len(sources) == 4 and {s["source_kind"] for s in samples} == {"photo", "video"}
    assert len(samples) == 4 * len(fv.CONDITIONS)
    for s in samples:
        img = cv2.imread(str(out / s["file"]))
        assert img is not None and img.shape == (fv.FRAME_H, fv.FRAME_W, 3), s["file"]
    results = json.loads((out / "results.json").read_text())
    for d in DETECTORS:
        assert results["detectors"][d]["available"] is True
        assert [r["id"] for r in results["detectors"][d]["samples"]] == [s["id"] for s in samples]


def test_labels_per_condition(harness: dict[str, Any]) -> None:
    manifest = harness["manifest"]
    small = manifest["too_small_px"]
    assert small < manifest["min_gaze_face_px"]
    for s in manifest["samples"]:
        name, group = s["condition"], s["group"]
        if group in (fv.TURNED, fv.TURNED_FLAT):
            assert s["expected"] is False and s["extra"]["warp"] == ("mesh" if group == fv.TURNED else "plane")
            sign = -1 if " - " in name else 1
            if name.startswith("yaw"):
                assert s["pitch"] == 0 and 30 <= sign * s["yaw"] <= 40
            else:
                assert s["yaw"] == 0 and 25 <= sign * s["pitch"] <= 35
        elif group == fv.TOO_SMALL:
            assert s["expected"] is None and s["face_box"][2] <= small + 1
        else:
            assert s["expected"] is True and s["yaw"] == 0 and s["pitch"] == 0
            assert s["face_box"][2] >= manifest["min_gaze_face_px"]
            assert s["mirrored"] == (group == fv.MIRRORED)
    # the "anywhere in the frame" placements really spread over the frame
    placed = [s["face_box"] for s in manifest["samples"] if s["group"] == fv.AT_CAMERA]
    cx = [(b[0] + b[2] / 2) / fv.FRAME_W for b in placed]
    cy = [(b[1] + b[3] / 2) / fv.FRAME_H for b in placed]
    assert min(cx) < 0.3 and max(cx) > 0.7 and min(cy) < 0.35 and max(cy) > 0.65


def test_media_are_deterministic(shared_data: Path, tmp_path: Path) -> None:
    sources = fv.load_sources(shared_data, limit=1, video_frames=0, log=lambda _m: None)
    a = fv.build_media(sources, tmp_path / "a", seed=3, small_px=40)
    b = fv.build_media(sources, tmp_path / "b", seed=3, small_px=40)
    c = fv.build_media(sources, tmp_path / "c", seed=4, small_px=40)
    assert a == b and a != c
    assert (tmp_path / "a" / a[8].file).read_bytes() == (tmp_path / "b" / b[8].file).read_bytes()


def test_a_source_with_averted_eyes_is_labelled_not_eye_contact(shared_data: Path, tmp_path: Path) -> None:
    """img17 looks well to the side with his head frontal: his untouched samples are "not eye contact" in
    their own group (never counted as looking at the camera), his head turns are left out, and the
    landmark path agrees on the centred one (measured: gaze yaw ~+20 deg with head yaw ~0)."""
    sources = [s for s in fv.load_sources(shared_data, limit=100, video_frames=0, log=lambda _m: None)
               if s.name in fv.AVERTED_SOURCES]
    assert [s.name for s in sources] == ["img17"]
    samples = fv.build_media(sources, tmp_path, seed=0, small_px=40)
    groups = {s.group for s in samples}
    assert fv.AT_CAMERA not in groups and fv.TURNED not in groups and fv.TURNED_FLAT not in groups
    averted = [s for s in samples if s.group == fv.EYES_AVERTED]
    assert len(averted) == len([c for c in fv.CONDITIONS if c.expected]) and all(s.expected is False for s in averted)
    assert [s.expected for s in samples if s.group == fv.TOO_SMALL] == [None]
    centre = [s for s in averted if s.condition == "centre"]
    rows = fv.analyse(centre, tmp_path, "mediapipe")["samples"]
    assert rows[0]["face"] and rows[0]["eye_contact"] is False and rows[0]["agree"]
    assert abs(rows[0]["head_yaw"]) < 8 < abs(rows[0]["gaze_yaw"])


def _centroid(img: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> tuple[float, float]:
    ys, xs = np.nonzero(img[y0:y1, x0:x1])
    return float(xs.mean() + x0), float(ys.mean() + y0)


def test_warp_sign_conventions() -> None:
    img = np.zeros((fv.FRAME_H, fv.FRAME_W), np.uint8)
    cx, cy = fv.FRAME_W // 2, fv.FRAME_H // 2
    for dx, dy in ((-100, 0), (100, 0), (0, -100), (0, 100)):
        img[cy + dy - 5 : cy + dy + 5, cx + dx - 5 : cx + dx + 5] = 255
    yaw = rotate_image_plane(img, 35.0, 0.0)
    lx, _ = _centroid(yaw, 0, cx - 40, cy - 30, cy + 30)
    rx, _ = _centroid(yaw, cx + 40, fv.FRAME_W, cy - 30, cy + 30)
    # yaw + = turned toward the image's right: the right side recedes (comes closer to the centre)
    assert cx - rx > -100 and rx - cx < cx - lx < 100
    pitch = rotate_image_plane(img, 0.0, 30.0)
    _, ty = _centroid(pitch, cx - 30, cx + 30, 0, cy - 40)
    _, by = _centroid(pitch, cx - 30, cx + 30, cy + 40, fv.FRAME_H)
    # pitch + = down: the lower part recedes
    assert by - cy < cy - ty < 100


@pytest.mark.parametrize(
    ("expected", "eye_contact", "agree"),
    [(True, True, True), (True, None, False), (True, False, False), (False, False, True),
     (False, None, False), (False, True, False), (None, None, True), (None, True, False), (None, False, False)],
)
def test_agreement_rule(expected: bool | None, eye_contact: bool | None, agree: bool) -> None:
    assert fv.agrees(expected, eye_contact) is agree


def test_haar_proxy_figures(harness: dict[str, Any]) -> None:
    """Haar's frontal-face proxy since issue 12: position in the frame no longer decides eye contact
    (before it, left/right/upper faces got 0 %), but it cannot see a head turn (the issue's 23/23)."""
    cond = _by_condition(harness, "opencv")
    groups = harness["results"]["opencv"]["summary"]["groups"]
    at_camera = [r for c in fv.CONDITIONS if c.group == fv.AT_CAMERA for r in cond[c.name]]
    assert all(r["face"] for r in at_camera)
    assert groups[fv.AT_CAMERA]["agree_pct"] >= 85.0  # measured 100 on this subset
    assert groups[fv.TURNED]["agree_pct"] <= 25.0  # measured 0 here
    # a face below the minimum size is never judged: no eye contact value, counted as agreement
    assert all(r["eye_contact"] is None and r["agree"] for r in cond["too small to judge"])


def _yaw_gains(harness: dict[str, Any], group: str) -> list[float]:
    """Measured head-yaw change / warp angle, against the same source's centred sample."""
    samples = harness["manifest"]["samples"]
    ref = {s["source"]: s["id"] for s in samples if s["condition"] == "centre"}
    rows = {r["id"]: r for r in harness["results"]["mediapipe"]["samples"]}
    return [
        (rows[s["id"]]["head_yaw"] - rows[ref[s["source"]]]["head_yaw"]) / s["yaw"]
        for s in samples if s["yaw"] and s["group"] == group
    ]


def test_mediapipe_figures(harness: dict[str, Any]) -> None:
    """The landmark pipeline on the same media; thresholds are this subset's measured figures minus a margin."""
    cond = _by_condition(harness, "mediapipe")
    groups = harness["results"]["mediapipe"]["summary"]["groups"]
    at_camera = [r for c in fv.CONDITIONS if c.group == fv.AT_CAMERA for r in cond[c.name]]
    assert all(r["face"] for r in at_camera)  # measured 32/32
    assert all(r["eye_contact"] is True and r["method"] == "iris" for r in cond["centre"])  # measured 4/4
    assert groups[fv.AT_CAMERA]["agree_pct"] >= 90.0  # measured 100 (32/32)
    assert groups[fv.MIRRORED]["agree_pct"] >= 75.0 and groups[fv.LIGHT]["agree_pct"] >= 85.0  # measured 100, 100
    assert groups[fv.TURNED]["agree_pct"] >= 75.0  # measured 87.5 (14/16), the 3D warp
    # found, but too small to judge: it says so instead of guessing
    for r in cond["too small to judge"]:
        assert r["face"] and r["too_small"] and r["eye_contact"] is None and r["reason"] == "face too small"
    # head yaw follows the 3D warp (measured gains 0.67-0.79, mean 0.73), hardly the flat one (no depth)
    gains = _yaw_gains(harness, fv.TURNED)
    assert len(gains) == 8 and min(gains) >= 0.4 and float(np.mean(gains)) >= 0.6
    flat = _yaw_gains(harness, fv.TURNED_FLAT)
    assert len(flat) == 8 and abs(float(np.mean(flat))) < 0.3  # measured mean 0.10


def test_cli_prints_side_by_side(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = evaluate.main(["face", "--out", str(tmp_path), "--detectors", "opencv,nosuchdetector",
                        "--limit", "1", "--video-frames", "0", "--data", str(shared_data)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| condition | expected | n | opencv face % |" in text and "nosuchdetector face %" in text
    assert "opencv: looking at the camera, anywhere in the frame: agreement" in text
    assert "opencv: head turned beyond threshold: agreement" in text
    assert "nosuchdetector: unavailable here" in text  # reported, never shown as 0 %
    assert (tmp_path / "manifest.json").is_file() and (tmp_path / "results.json").is_file()
