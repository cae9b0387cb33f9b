"""Tests for the landmark face pipeline (sidecar.face_mesh, sidecar.face_geometry and the analyzer's
mediapipe path) on real photos and a real webcam-style video from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.settings import EmotionSettings, Settings
from sidecar import face_geometry as geo
from sidecar.emotion import EmotionAnalyzer
from sidecar.face_detectors import DetectorUnavailableError, HaarFaceDetector, make_detector
from sidecar.face_mesh import FaceMesh, MediaPipeFaceDetector, MeshFace, ssd_anchors, weighted_nms

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACES = DATA / "faces"
VIDEO = DATA / "video" / "baseline.mp4"
PHOTOS = sorted(FACES.glob("*.jpg"))
MULTI_FACE = ("couple.jpg", "selfie-many-people.jpg")
# photos whose face is nearly frontal (|head yaw| < 8 deg): used for pose and gaze checks
NEAR_FRONTAL = ("img30.jpg", "img9.jpg", "img56.jpg", "img62.jpg", "img10.jpg", "img5.jpg")


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    m = FaceMesh()
    m.load()
    return m


def photo(name: str) -> np.ndarray:
    return read(FACES / name)


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"test material missing: {path}"
    return np.asarray(img)


def analyze(a: EmotionAnalyzer, img: np.ndarray, t: float = 0.0) -> Any:
    """The analyzer's FrameSample as a plain dict (the tests index optional fields freely)."""
    return a.analyze(img, t)


def landmarks_of(mesh: FaceMesh, img: np.ndarray) -> MeshFace:
    mesh.reset()
    face = mesh.process(img, bgr=True)
    assert face is not None
    return face


def pose_of(mesh: FaceMesh, img: np.ndarray) -> geo.HeadPose:
    face = landmarks_of(mesh, img)
    pose = geo.head_pose(face.landmarks, img.shape[1], img.shape[0])
    assert pose is not None
    return pose


def in_frame(img: np.ndarray, width: int, x0: int, y0: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """The photo scaled to ``width`` pixels wide and pasted at (x0, y0) of a gray 640x480 frame."""
    small = cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA)
    frame = np.full((size[1], size[0], 3), 90, np.uint8)
    h = min(small.shape[0], size[1] - y0)
    frame[y0 : y0 + h, x0 : x0 + width] = small[:h]
    return frame


@pytest.fixture(scope="module")
def video_frames() -> list[np.ndarray]:
    """Every 4th frame of the first 2 s of baseline.mp4, downscaled to 640 wide (as the sidecar sees it)."""
    import av

    out = []
    with av.open(str(VIDEO)) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and stream.time_base is not None and float(frame.pts * stream.time_base) > 2.0:
                break
            if i % 4 == 0:
                img: np.ndarray = frame.to_ndarray(format="bgr24")
                out.append(cv2.resize(img, (640, round(img.shape[0] * 640 / img.shape[1])), interpolation=cv2.INTER_AREA))
    assert len(out) >= 10
    return out


# --- BlazeFace ---------------------------------------------------------------------------------


def test_anchor_grids_match_the_models() -> None:
    # short range: 16x16 x 2 + 8x8 x 6 anchors; full range: 48x48 x 1 (the models' output rows)
    short, full = ssd_anchors(128, (8, 16, 16, 16), True), ssd_anchors(192, (4,), False)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[512], [0.5 / 8, 0.5 / 8])
    assert float(short.min()) > 0 and float(short.max()) < 1


def test_weighted_nms_averages_overlapping_boxes() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0]])
    kps = np.zeros((3, 6, 2))
    kps[1] += 1.0
    out = weighted_nms(boxes, kps, np.array([0.9, 0.3, 0.6]))
    assert len(out) == 2
    (b0, k0, s0), (b1, _k1, s1) = out
    assert s0 == 0.9 and s1 == 0.6
    assert b0[0] == pytest.approx(0.1 * 0.3 / 1.2) and k0[0, 0] == pytest.approx(0.3 / 1.2)
    assert np.allclose(b1, boxes[2])


def test_detection_on_every_photo(mesh: FaceMesh) -> None:
    found = 0
    for path in PHOTOS:
        img = read(path)
        dets = mesh.detect(img, bgr=True)
        if not dets:
            continue
        found += 1
        for box, kps, score in dets:
            assert 0.5 <= score <= 1.0
            w, h = box[2] - box[0], box[3] - box[1]
            assert 0.5 < h / w < 2.0 and w > 20
            # both eye keypoints inside the box, in its upper half, image-left eye first
            for x, y in kps[:2]:
                assert box[0] <= x <= box[2] and box[1] <= y <= (box[1] + box[3]) / 2 + 0.1 * h
            assert kps[0][0] < kps[1][0]
    assert found == len(PHOTOS)


@pytest.mark.parametrize("name", MULTI_FACE)
def test_several_faces_largest_is_tracked(mesh: FaceMesh, name: str) -> None:
    img = photo(name)
    dets = mesh.detect(img, bgr=True)
    assert len(dets) >= 2
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b, _k, _s in dets]
    big = dets[int(np.argmax(areas))][0]
    face = landmarks_of(mesh, img)
    cx, cy = face.landmarks[:, 0].mean(), face.landmarks[:, 1].mean()
    assert big[0] <= cx <= big[2] and big[1] <= cy <= big[3]


# --- landmarks and iris --------------------------------------------------------------------------


def test_landmarks_and_iris_sanity_on_photos(mesh: FaceMesh) -> None:
    alongs = []
    for path in PHOTOS:
        img = read(path)
        face = landmarks_of(mesh, img)
        lm = face.landmarks
        assert lm.shape == (468, 3) and np.isfinite(lm).all() and face.score > 0.5
        # image order along the eye line: 33 (outer) < 133 (inner) < 362 (inner) < 263 (outer), nose between
        assert lm[33, 0] < lm[133, 0] < lm[362, 0] < lm[263, 0] and lm[33, 0] < lm[1, 0] < lm[263, 0]
        assert lm[10, 1] < lm[1, 1] < lm[13, 1] < lm[152, 1]  # forehead, nose, lip, chin top to bottom
        assert face.iris is not None and face.iris.shape == (2, 5, 2)
        for (a, b), iris in zip(geo.EYE_LINE, face.iris, strict=True):
            eye_w = float(np.linalg.norm(lm[b, :2] - lm[a, :2]))
            radius = float(np.mean(np.linalg.norm(iris[1:] - iris[0], axis=1)))
            assert 0.15 * eye_w < radius < 0.45 * eye_w  # an iris, not a stray point
        for along, across in geo.iris_offsets(lm, face.iris):
            assert 0.2 < along < 0.8 and abs(across) < 0.25  # the iris centre inside the eye
            alongs.append(along)
    # people looking into the lens: the iris centred along the eye line on average (MODELS.md: 0.40-0.56)
    assert 0.45 < float(np.median(alongs)) < 0.55


def test_open_eye_aspect_ratio_on_photos(mesh: FaceMesh) -> None:
    # every photo has open eyes: EAR well above the blink threshold (closed eyes measure < 0.1)
    ears = [np.mean(geo.eye_aspect_ratios(landmarks_of(mesh, read(p)).landmarks)) for p in PHOTOS]
    assert min(ears) > EmotionSettings().blink_ear + 0.03 and max(ears) < 0.5, (min(ears), max(ears))


# --- head pose and gaze ----------------------------------------------------------------------------


def test_head_pose_near_zero_on_frontal_faces(mesh: FaceMesh, video_frames: list[np.ndarray]) -> None:
    for name in NEAR_FRONTAL:
        pose = pose_of(mesh, photo(name))
        assert abs(pose.yaw) < 8 and abs(pose.roll) < 8 and abs(pose.pitch) < 20, (name, pose)
    poses = [pose_of(mesh, f) for f in video_frames[::3]]
    assert all(abs(p.yaw) < 8 and abs(p.pitch) < 10 and abs(p.roll) < 8 for p in poses), poses


@pytest.mark.parametrize("name", NEAR_FRONTAL)
def test_head_pose_follows_a_turned_face(mesh: FaceMesh, name: str) -> None:
    img = photo(name)
    base = pose_of(mesh, img)
    right, left = pose_of(mesh, geo.rotate_face_image(img, 30, 0)), pose_of(mesh, geo.rotate_face_image(img, -30, 0))
    # sign and magnitude: a 30 deg turn reads as 15-40 deg, toward the side it was turned to
    assert 15 < right.yaw - base.yaw < 40 and 15 < base.yaw - left.yaw < 40, (base, right, left)
    down, up = pose_of(mesh, geo.rotate_face_image(img, 0, 20)), pose_of(mesh, geo.rotate_face_image(img, 0, -20))
    assert down.pitch - base.pitch > 8 and base.pitch - up.pitch > 4, (base, down, up)
    assert abs(down.yaw - base.yaw) < 8 and abs(right.roll - base.roll) < 10


def test_the_nearer_eye_counts_more_in_the_gaze() -> None:
    lm = np.zeros((468, 3))
    for (a, b), (x0, x1) in zip(geo.EYE_LINE, ((100.0, 130.0), (170.0, 200.0)), strict=True):
        lm[a, :2], lm[b, :2] = (x0, 100.0), (x1, 100.0)
    assert geo.eye_weights(lm) == pytest.approx((0.5, 0.5))  # frontal: both eyes alike
    lm[geo.EYE_LINE[1][1], 0] = 185.0  # head turned: the image-right eye foreshortened to half its width
    w_left, w_right = geo.eye_weights(lm)
    assert w_left == pytest.approx(0.8) and w_right == pytest.approx(0.2)  # widths squared: 900 vs 225


def test_eye_contact_score_is_a_margin() -> None:
    assert geo.eye_contact(0, 0, 15, 20) == (True, 1.0)
    contact, score = geo.eye_contact(7.5, 0, 15, 20)
    assert contact and score == pytest.approx(0.75)
    assert geo.eye_contact(15, 20, 15, 20)[0] is True and geo.eye_contact(15, 20, 15, 20)[1] > 0.5
    contact, score = geo.eye_contact(0, 30, 15, 20)  # pitch 1.5 limits off
    assert not contact and score == pytest.approx(0.25)
    assert geo.eye_contact(-60, 0, 15, 20) == (False, 0.0)
    assert geo.eye_contact(0, 0, 0, 0)[0] is True and geo.eye_contact(0.1, 0, 0, 20) == (False, 0.0)


def test_rotate_face_image_keeps_size_and_identity() -> None:
    img = photo("img30.jpg")
    assert geo.rotate_face_image(img, 20, 10).shape == img.shape
    assert np.array_equal(geo.rotate_image_plane(img, 0, 0), img)
    flat = np.full((200, 300, 3), 50, np.uint8)  # no face: the plane warp
    assert geo.rotate_face_image(flat, 30, 0).shape == flat.shape


def test_mirrored_face_flips_yaw(mesh: FaceMesh) -> None:
    for name in ("img59.jpg", "img61.jpg", "selfie-many-people.jpg", "img44.jpg"):
        img = photo(name)
        a, b = pose_of(mesh, img), pose_of(mesh, np.ascontiguousarray(img[:, ::-1]))
        assert abs(a.yaw) > 5 and np.sign(a.yaw) == -np.sign(b.yaw), (name, a, b)
        assert a.yaw + b.yaw == pytest.approx(0, abs=5) and a.pitch == pytest.approx(b.pitch, abs=6)
        assert a.roll + b.roll == pytest.approx(0, abs=4)


# --- the analyzer's landmark path ----------------------------------------------------------------


@pytest.fixture
def analyzer() -> EmotionAnalyzer:
    a = EmotionAnalyzer(EmotionSettings())
    a.warm_up()
    return a


def test_mediapipe_is_the_default_and_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EmotionSettings().detector == "mediapipe"
    assert isinstance(make_detector("mediapipe"), MediaPipeFaceDetector)  # ours, never DeepFace's backend
    assert isinstance(make_detector("opencv"), HaarFaceDetector)
    monkeypatch.setenv("MOCKAI_FACE_DETECTOR", "opencv")
    assert Settings().emotion.detector == "opencv"
    monkeypatch.setenv("MOCKAI_EYE_CONTACT_YAW_DEG", "12")
    assert Settings().emotion.eye_contact_yaw_deg == 12.0
    with pytest.raises(ValueError):
        EmotionSettings(eye_contact_pitch_deg=-1)


def test_missing_mediapipe_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    with pytest.raises(DetectorUnavailableError, match=r"mediapipe==0\.10\.14.*MOCKAI_FACE_DETECTOR=opencv"):
        EmotionAnalyzer(EmotionSettings(detector="mediapipe"))


def test_every_field_on_a_frontal_photo(analyzer: EmotionAnalyzer) -> None:
    img = in_frame(photo("img30.jpg"), 400, 120, 0)
    r = analyze(analyzer, img, 0.5)
    json.dumps(r, allow_nan=False)
    assert r["face"] and r["detector"] == "mediapipe" and r["aligned"] is True and r["too_small"] is False
    x, y, w, h = r["box"]
    assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480 and w > 100
    g, head = r["gaze"], r["head"]
    assert g["method"] == "iris" and g["eyes_found"] == 2 and g["reason"] is None
    assert g["eye_contact"] is True and g["score"] > 0.5 and g["frontal"] is True
    assert abs(g["yaw"]) < 12 and abs(g["pitch"]) < 12 and all(0.3 < v < 0.7 for v in g["iris"])
    assert abs(head["yaw"]) < 8 and abs(head["roll"]) < 8 and head["yaw_proxy"] is None
    assert r["framing"]["scale"] == pytest.approx(w / 640, abs=1e-3)
    assert r["eyes"]["closed"] is False and all(0.15 < e < 0.5 for e in r["eyes"]["ear"])
    assert 0 <= r["mouth"]["smile"] <= 1 and r["mouth"]["open"] >= 0
    assert r["mouth"]["smiling"] is (r["mouth"]["smile"] > analyzer.options.smile_threshold)
    assert r["dominant"] == "neutral"  # the same photo gives neutral on the Haar crop too


def test_eye_contact_on_frontal_photos_and_not_when_turned(analyzer: EmotionAnalyzer) -> None:
    contact = []
    for path in PHOTOS:
        analyzer.reset()
        r = analyze(analyzer, read(path), 0.0)
        if r["gaze"]["frontal"]:
            contact.append(bool(r["gaze"]["eye_contact"]))
    assert len(contact) >= 30 and sum(contact) >= 0.9 * len(contact), (sum(contact), len(contact))
    for name in NEAR_FRONTAL:
        for yaw in (-35, 35):
            analyzer.reset()
            r = analyze(analyzer, geo.rotate_face_image(photo(name), yaw, 0), 0.0)
            assert r["gaze"]["eye_contact"] is False and r["gaze"]["score"] < 0.5, (name, yaw, r["gaze"])
            assert np.sign(r["gaze"]["yaw"]) == np.sign(yaw)


def test_shifted_face_still_makes_eye_contact(analyzer: EmotionAnalyzer) -> None:
    img = photo("img30.jpg")
    for x0, y0 in ((0, 0), (340, 0), (170, 120)):
        analyzer.reset()
        r = analyze(analyzer, in_frame(img, 300, x0, y0), 0.0)
        assert r["gaze"]["eye_contact"] is True, (x0, y0, r["gaze"])
    # the last framing is near the centre, the first in the top-left corner
    analyzer.reset()
    corner = analyze(analyzer, in_frame(img, 300, 0, 0), 0.0)
    assert corner["framing"]["offset"][0] < -0.15 and corner["framing"]["offset"][1] < -0.15


def test_tiny_face_is_too_small_to_judge_gaze(analyzer: EmotionAnalyzer) -> None:
    frame = in_frame(photo("img30.jpg"), 120, 260, 180)  # a face ~40 px wide in a 640x480 frame
    r = analyze(analyzer, frame, 0.0)
    assert r["face"] is True and r["box"][2] < analyzer.options.min_gaze_face_px
    assert r["too_small"] is True and r["uncertain"] is True and r["emotions"] is not None
    g = r["gaze"]
    assert g["eye_contact"] is None and g["score"] is None and g["reason"] == "face too small"
    assert g["yaw"] is None and g["iris"] is None and r["eyes"] is None


def test_closed_eyes_are_not_judged(webcam_frame_mesh: np.ndarray) -> None:
    # with a blink threshold above these open eyes' EAR every eye reads as closed: no gaze is judged
    a = EmotionAnalyzer(EmotionSettings(blink_ear=0.6))
    r = analyze(a, webcam_frame_mesh, 0.0)
    assert r["eyes"]["closed"] is True
    assert r["gaze"]["eye_contact"] is None and r["gaze"]["reason"] == "eyes closed" and r["gaze"]["yaw"] is None


@pytest.fixture(scope="module")
def webcam_frame_mesh() -> np.ndarray:
    return in_frame(photo("img1.jpg"), 330, 155, 0)


def test_tracking_between_detections_and_redetect_on_loss(
    analyzer: EmotionAnalyzer, video_frames: list[np.ndarray]
) -> None:
    det = analyzer._detector
    assert isinstance(det, MediaPipeFaceDetector)
    start = det.mesh.detections
    results = [analyze(analyzer, f, i / 7.5) for i, f in enumerate(video_frames)]
    assert all(r["face"] for r in results)
    assert [r["tracked"] for r in results] == [False] + [True] * (len(results) - 1)
    assert det.mesh.detections == start + 1  # BlazeFace ran once; the landmarks tracked the rest
    moves = [r["head"]["movement"] for r in results[1:]]
    assert float(np.median(moves)) < 0.1
    # the person leaves (a blank frame), then comes back: no invented face, then a fresh detection
    gone = analyze(analyzer, np.zeros_like(video_frames[0]), 9.0)
    assert gone["face"] is False and gone["gaze"]["eye_contact"] is None and gone["gaze"]["reason"] == "no face"
    back = analyze(analyzer, video_frames[0], 9.2)
    assert back["face"] is True and back["tracked"] is False and back["head"]["movement"] is None
    assert det.mesh.detections >= start + 3


@pytest.fixture(scope="module")
def mesh_iris() -> FaceMesh:
    m = FaceMesh(landmark_model="mesh+iris")
    m.load()
    return m


MESH_IRIS = EmotionSettings(landmark_model="mesh+iris")


def test_one_eye_iris_run_matches_that_eye_of_the_pair(mesh_iris: FaceMesh) -> None:
    mesh = mesh_iris
    img = photo("img30.jpg")
    lm = landmarks_of(mesh, img).landmarks
    both = mesh.irises(img, lm, bgr=True)
    assert both is not None and np.isfinite(both).all()
    for k in (0, 1):
        one = mesh.irises(img, lm, bgr=True, eyes=(k,))
        assert one is not None and np.isnan(one[1 - k]).all()
        assert np.abs(one[k] - both[k]).max() < 0.05  # px: one model, batch 1 against batch 2
    with pytest.raises(ValueError, match="eyes"):
        mesh.irises(img, lm, bgr=True, eyes=())


def test_tracked_frames_measure_one_iris_in_turn(video_frames: list[np.ndarray]) -> None:
    alt = EmotionAnalyzer(MESH_IRIS)
    both = EmotionAnalyzer(EmotionSettings(landmark_model="mesh+iris", iris_alternate=False))
    ga = [analyze(alt, f, i / 7.5)["gaze"] for i, f in enumerate(video_frames)]
    gb = [analyze(both, f, i / 7.5)["gaze"] for i, f in enumerate(video_frames)]
    # the detection frame measures both eyes; every tracked frame the eye not measured the frame before
    assert ga[0]["iris_fresh"] == [True, True]
    fresh = [g["iris_fresh"] for g in ga[1:]]
    assert all(sum(f) == 1 for f in fresh) and all(a != b for a, b in zip(fresh, fresh[1:], strict=False))
    assert all(g["iris_fresh"] == [True, True] for g in gb)
    for a, b in zip(ga, gb, strict=True):  # the reused eye moves the gaze by a degree or two at most
        assert a["eyes_found"] == 2 and a["eye_contact"] == b["eye_contact"]
        assert abs(a["yaw"] - b["yaw"]) < 3 and abs(a["pitch"] - b["pitch"]) < 3, (a, b)
    assert ga[0]["yaw"] == gb[0]["yaw"] and ga[0]["iris"] == gb[0]["iris"]
    # a new answer, or a frame whose gaze is not judged, leaves nothing to reuse: both eyes again
    alt.reset()
    assert analyze(alt, video_frames[1], 0.0)["gaze"]["iris_fresh"] == [True, True]
    assert analyze(alt, np.zeros_like(video_frames[0]), 0.2)["gaze"]["reason"] == "no face"
    assert analyze(alt, video_frames[2], 0.4)["gaze"]["iris_fresh"] == [True, True]


def test_a_closed_eye_frame_ends_the_reuse(video_frames: list[np.ndarray]) -> None:
    a = EmotionAnalyzer(MESH_IRIS)
    assert analyze(a, video_frames[0], 0.0)["gaze"]["iris_fresh"] == [True, True]
    assert sum(analyze(a, video_frames[1], 0.13)["gaze"]["iris_fresh"]) == 1
    a.options = EmotionSettings(landmark_model="mesh+iris", blink_ear=0.6)  # open eyes now read as closed
    assert analyze(a, video_frames[2], 0.27)["gaze"]["reason"] == "eyes closed"
    a.options = MESH_IRIS
    r = analyze(a, video_frames[3], 0.4)
    assert r["tracked"] is True and r["gaze"]["iris_fresh"] == [True, True]


def test_attention_model_agrees_with_the_landmark_and_iris_models(mesh: FaceMesh, mesh_iris: FaceMesh) -> None:
    # two different models of the same face: the attention model's landmarks and irises land within a
    # few per cent of the face's width of face_landmark's and the iris model's, on every near-frontal photo
    assert mesh.irises_with_landmarks and not mesh_iris.irises_with_landmarks
    for name in NEAR_FRONTAL:
        img = photo(name)
        att, ref = landmarks_of(mesh, img), landmarks_of(mesh_iris, img)
        assert att.iris is not None and ref.iris is not None
        width = ref.box[2]
        d = np.linalg.norm(att.landmarks[:, :2] - ref.landmarks[:, :2], axis=1)
        assert np.median(d) < 0.02 * width and d.max() < 0.08 * width, (name, np.median(d) / width, d.max() / width)
        # iris centres, image-left eye first in both
        di = np.linalg.norm(att.iris[:, 0] - ref.iris[:, 0], axis=1)
        assert di.max() < 0.02 * width, (name, di / width)


def test_attention_irises_belong_to_their_landmarks(mesh: FaceMesh) -> None:
    img = photo("img30.jpg")
    face = landmarks_of(mesh, img)
    got = mesh.irises(img, face.landmarks, bgr=True)
    assert got is not None and face.iris is not None and np.array_equal(got, face.iris)
    with pytest.raises(ValueError, match="last process"):
        mesh.irises(img, face.landmarks.copy(), bgr=True)  # landmarks it did not just give
    with pytest.raises(ValueError, match="landmark_model"):
        FaceMesh(landmark_model="attention-v2")
    with pytest.raises(ValueError):
        EmotionSettings(landmark_model="attention-v2")


def test_attention_gaze_every_frame_needs_no_reuse(video_frames: list[np.ndarray]) -> None:
    a = EmotionAnalyzer(EmotionSettings())  # iris_alternate is on, but the attention model has both irises
    gazes = [analyze(a, f, i / 7.5)["gaze"] for i, f in enumerate(video_frames)]
    assert all(g["iris_fresh"] == [True, True] and g["eyes_found"] == 2 for g in gazes)
    assert all(g["eye_contact"] is True for g in gazes)  # baseline.mp4 looks into the camera throughout


def test_haar_path_fields(webcam_frame_mesh: np.ndarray) -> None:
    r = analyze(EmotionAnalyzer(EmotionSettings(detector="opencv")), webcam_frame_mesh)
    assert r["detector"] == "opencv" and r["gaze"]["method"] == "frontal-proxy" and r["aligned"] is False
    assert r["head"]["yaw"] is None and r["head"]["pitch"] is None and r["head"]["roll"] is None
    assert r["framing"] is not None and r["eyes"] is None and r["mouth"] is None
    assert r["gaze"]["eye_contact"] is r["gaze"]["frontal"]
