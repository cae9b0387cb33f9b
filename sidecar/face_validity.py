"""Face validity harness (``python -m pipeline.evaluate face``): labelled media built from real photos and
video frames (position, scale, perspective yaw/pitch, mirror, light, too small), run through EmotionAnalyzer
per detector and scored against the labels (eye-contact agreement, head-pose error, face-found rate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.settings_sections import EmotionSettings
from sidecar.emotion import EmotionAnalyzer, analyzer_settings
from sidecar.face_detectors import FACE_CASCADE, load_cascade
from sidecar.face_geometry import rotate_face_image, rotate_image_plane
from sidecar.face_mesh import FaceMesh

FRAME_W, FRAME_H = 640, 480
MULTI_FACE = frozenset({"couple.jpg", "selfie-many-people.jpg"})  # not single-face: skipped
FACE_W = 0.25  # face width / frame width of the nominal placement (160 px: a laptop camera at arm's length)
JITTER = 0.03  # seeded jitter of each placement (fraction of the frame)
SOURCE_MAX = 1600  # sources are downscaled to at most this many pixels on their long side
JPEG_QUALITY = 95
TOO_SMALL_FACTOR = 0.6  # "too small" faces are this fraction of the minimum face size
AT_CAMERA, TURNED, MIRRORED, LIGHT, TOO_SMALL = "at camera", "turned", "mirrored", "light", "too small"
TURNED_FLAT = "turned (flat photo)"  # the same angles on the flat photo: no nose parallax, a weaker cue
EYES_AVERTED = "eyes averted"  # a source whose eyes look away from the lens with the head frontal
# Sources whose eyes, looked at in the photo, are not on the camera: every other source is taken to look at
# it. Their untouched conditions (position, scale, mirror, light) are labelled "not eye contact" in their
# own group; their turned conditions are left out (a head turn may bring such eyes back to the lens).
AVERTED_SOURCES: dict[str, str] = {
    "img17": "head frontal, smiling, both eyes turned well toward the image's right (his left)",
}
Log = Callable[[str], object]


@dataclass(frozen=True)
class Condition:
    name: str
    group: str
    expected: bool | None  # eye contact expected; None = "too small to judge"
    at: tuple[float, float] = (0.5, 0.5)  # face centre, fraction of the frame
    face_w: float = FACE_W
    yaw: tuple[float, float] | None = None  # |angle| range in degrees and its sign comes from the name
    pitch: tuple[float, float] | None = None
    sign: int = 1
    warp: str = "mesh"  # "mesh": the face's 3D landmarks rotated; "plane": the flat photo rotated
    mirror: bool = False
    gamma: float = 1.0  # out = in ** gamma (> 1 darker)
    gain: float = 1.0  # exposure: out = in * gain


CONDITIONS: tuple[Condition, ...] = (
    Condition("centre", AT_CAMERA, True),
    Condition("upper (camera below eye level)", AT_CAMERA, True, at=(0.5, 0.27)),
    Condition("lower", AT_CAMERA, True, at=(0.5, 0.72)),
    Condition("left", AT_CAMERA, True, at=(0.22, 0.5)),
    Condition("right", AT_CAMERA, True, at=(0.78, 0.5)),
    Condition("upper left corner", AT_CAMERA, True, at=(0.25, 0.3)),
    Condition("near (large face)", AT_CAMERA, True, face_w=0.42),
    Condition("far (small face)", AT_CAMERA, True, face_w=0.13),
    Condition("yaw + (turned to image right), 3D", TURNED, False, yaw=(30.0, 40.0)),
    Condition("yaw - (turned to image left), 3D", TURNED, False, yaw=(30.0, 40.0), sign=-1),
    Condition("pitch + (looking down), 3D", TURNED, False, pitch=(25.0, 35.0)),
    Condition("pitch - (looking up), 3D", TURNED, False, pitch=(25.0, 35.0), sign=-1),
    Condition("yaw + (turned to image right), flat", TURNED_FLAT, False, yaw=(30.0, 40.0), warp="plane"),
    Condition("yaw - (turned to image left), flat", TURNED_FLAT, False, yaw=(30.0, 40.0), sign=-1, warp="plane"),
    Condition("pitch + (looking down), flat", TURNED_FLAT, False, pitch=(25.0, 35.0), warp="plane"),
    Condition("pitch - (looking up), flat", TURNED_FLAT, False, pitch=(25.0, 35.0), sign=-1, warp="plane"),
    Condition("mirrored", MIRRORED, True, mirror=True),
    Condition("darker (gamma 2.0)", LIGHT, True, gamma=2.0),
    Condition("darker (exposure x0.45)", LIGHT, True, gain=0.45),
    Condition("brighter (gamma 0.5)", LIGHT, True, gamma=0.5),
    Condition("brighter (exposure x1.6)", LIGHT, True, gain=1.6),
    Condition("too small to judge", TOO_SMALL, None),
)


@dataclass
class Source:
    name: str
    kind: str  # "photo" or "video"
    image: np.ndarray  # BGR
    box: tuple[int, int, int, int]  # the face in ``image`` (Haar alt2, largest face)


@dataclass
class Sample:
    id: str
    file: str
    source: str
    source_kind: str
    condition: str
    group: str
    expected: bool | None
    yaw: float  # warp angle in degrees (+ = face turned toward the image's right), 0 when not warped
    pitch: float  # warp angle in degrees (+ = down)
    mirrored: bool
    face_box: list[int]  # where the source face box was placed in the frame
    extra: dict[str, Any] = field(default_factory=dict)


def _locate(cascade: cv2.CascadeClassifier, img: np.ndarray) -> tuple[int, int, int, int] | None:
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    r = min(1.0, 800 / max(gray.shape))
    small = cv2.resize(gray, None, fx=r, fy=r, interpolation=cv2.INTER_AREA) if r < 1 else gray
    side = min(small.shape)
    faces = cascade.detectMultiScale(small, 1.1, 5, minSize=(max(24, side // 8),) * 2)
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    return (round(x / r), round(y / r), round(w / r), round(h / r))


def _video_frames(path: Path, count: int) -> list[tuple[int, np.ndarray]]:
    import av  # decoded only when the harness asks for video sources

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    if not frames or count <= 0:
        return []
    picks = np.linspace(0, len(frames) - 1, count + 2)[1:-1] if count > 1 else [len(frames) // 2]
    return [(int(i), frames[int(i)]) for i in picks]


def load_sources(data: Path, limit: int, video_frames: int, log: Log = print) -> list[Source]:
    """Up to ``limit`` single-face photos of data/faces, then ``video_frames`` frames of each data/video clip."""
    cascade = load_cascade(FACE_CASCADE)
    raw: list[tuple[str, str, np.ndarray]] = []
    photos = sorted((p for p in (data / "faces").glob("*.jpg") if p.name not in MULTI_FACE),
                    key=lambda p: (len(p.stem), p.stem))
    for p in photos[: max(0, limit)]:
        img = cv2.imread(str(p))
        if img is not None:
            raw.append((p.stem, "photo", img))
    for clip in sorted((data / "video").glob("*.mp4")):
        raw += [(f"{clip.stem}@{i}", "video", img) for i, img in _video_frames(clip, video_frames)]
    out = []
    for name, kind, img in raw:
        r = min(1.0, SOURCE_MAX / max(img.shape[:2]))
        if r < 1.0:
            img = cv2.resize(img, None, fx=r, fy=r, interpolation=cv2.INTER_AREA)
        box = _locate(cascade, img)
        if box is None:
            log(f"skipped {name}: no face found to place")
            continue
        out.append(Source(name, kind, img, box))
    return out


def place(src: Source, at: tuple[float, float], face_w: float) -> tuple[np.ndarray, list[int]]:
    """The source scaled so its face is ``face_w`` frame widths wide, centred at ``at``; edges replicated."""
    x, y, w, h = src.box
    s = face_w * FRAME_W / w
    tx, ty = at[0] * FRAME_W - s * (x + w / 2), at[1] * FRAME_H - s * (y + h / 2)
    m = np.array([[s, 0.0, tx], [0.0, s, ty]])
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = cv2.warpAffine(src.image, m, (FRAME_W, FRAME_H), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return img, [round(s * x + tx), round(s * y + ty), round(s * w), round(s * h)]


def relight(img: np.ndarray, gamma: float, gain: float) -> np.ndarray:
    lut = np.clip(255.0 * gain * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    out: np.ndarray = cv2.LUT(img, lut)
    return out


def build_media(sources: Sequence[Source], out: Path, seed: int, small_px: int) -> list[Sample]:
    """Render every condition of every source to out/media/*.jpg (seeded) and return their labels."""
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    # landmarks of the placed face, for the 3D warp (one instance: loads once); the face_landmark model, as
    # when the harness was built, so the media stay the same whichever landmark model is measured
    mesh = FaceMesh(landmark_model="mesh+iris")
    samples = []
    for k, src in enumerate(sources):
        rng = np.random.default_rng([seed, k])  # per source: --limit does not move other sources' samples
        averted = src.name in AVERTED_SOURCES
        for c_i, cond in enumerate(CONDITIONS):
            jx, jy = rng.uniform(-JITTER, JITTER, 2)
            face_w = small_px * TOO_SMALL_FACTOR / FRAME_W if cond.group == TOO_SMALL else cond.face_w
            at = (cond.at[0] + jx, cond.at[1] + jy) if cond.group == AT_CAMERA else cond.at
            yaw = cond.sign * float(rng.uniform(*cond.yaw)) if cond.yaw else 0.0
            pitch = cond.sign * float(rng.uniform(*cond.pitch)) if cond.pitch else 0.0
            group, expected = cond.group, cond.expected
            if averted and cond.group in (TURNED, TURNED_FLAT):
                continue  # the draws above still ran: the next conditions' jitter stays the same
            if averted and cond.expected:
                group, expected = EYES_AVERTED, False
            img, box = place(src, at, face_w)
            warp = None
            if (yaw or pitch) and cond.warp == "plane":  # the face is at the frame centre, the plane's pivot
                img, warp = rotate_image_plane(img, yaw, pitch), "plane"
            elif yaw or pitch:
                mesh.reset()
                face = mesh.process(img, bgr=True)
                warp = "mesh" if face is not None else "plane (no landmarks for the 3D warp)"
                img = rotate_face_image(img, yaw, pitch, face.landmarks) if face is not None else \
                    rotate_image_plane(img, yaw, pitch)
            if cond.mirror:
                img = np.ascontiguousarray(img[:, ::-1])
                box = [FRAME_W - box[0] - box[2], box[1], box[2], box[3]]
            if cond.gamma != 1.0 or cond.gain != 1.0:
                img = relight(img, cond.gamma, cond.gain)
            sid = f"{src.name.replace('@', '_f')}__{c_i:02d}"
            cv2.imwrite(str(media / f"{sid}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            samples.append(Sample(sid, f"media/{sid}.jpg", src.name, src.kind, cond.name, group,
                                  expected, round(yaw, 2), round(pitch, 2), cond.mirror, box,
                                  {"gamma": cond.gamma, "gain": cond.gain, "face_px": box[2], "warp": warp}))
    return samples


def agrees(expected: bool | None, eye_contact: bool | None) -> bool:
    """Abstaining (None) agrees only with "too small to judge"; a guess on a too-small face disagrees."""
    return eye_contact is None if expected is None else eye_contact is expected


def analyse(samples: Sequence[Sample], out: Path, detector: str) -> dict[str, Any]:
    """Each sample's JPEG (as written) through a fresh-state EmotionAnalyzer; per-sample outcomes."""
    try:
        analyzer = EmotionAnalyzer(analyzer_settings(detector))
        analyzer.warm_up()
    except Exception as exc:  # a detector that cannot run here is reported as such, not as 0 %
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "samples": []}
    rows = []
    for s in samples:
        img = cv2.imread(str(out / s.file))
        if img is None:
            raise RuntimeError(f"cannot read back {out / s.file}")
        analyzer.reset()
        r = analyzer.analyze(img, 0.0)
        gaze, head = r["gaze"], r["head"]
        rows.append({
            "id": s.id, "face": r["face"], "eye_contact": gaze["eye_contact"], "score": gaze["score"],
            "too_small": bool(r.get("too_small", False)), "reason": gaze.get("reason"),
            "method": gaze.get("method"), "gaze_yaw": gaze.get("yaw"), "gaze_pitch": gaze.get("pitch"),
            "iris": gaze.get("iris"), "head_yaw": head.get("yaw"), "head_pitch": head.get("pitch"),
            "agree": agrees(s.expected, gaze["eye_contact"]),
        })
    return {"available": True, "error": None, "samples": rows}


def _pose_errors(samples: Sequence[Sample], rows: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per sample id: |measured - expected| yaw and pitch, expected = the same source's centred pose
    (mirrored: yaw negated) plus the warp angle. Only where both poses were measured."""
    ref: dict[str, tuple[float, float]] = {}
    by_id = {r["id"]: r for r in rows}
    for s in samples:
        r = by_id[s.id]
        if s.condition == CONDITIONS[0].name and r["head_yaw"] is not None and r["head_pitch"] is not None:
            ref[s.source] = (float(r["head_yaw"]), float(r["head_pitch"]))
    errs = {}
    for s in samples:
        r = by_id[s.id]
        if s.source not in ref or s.condition == CONDITIONS[0].name or s.group == TOO_SMALL:
            continue
        if r["head_yaw"] is None or r["head_pitch"] is None:
            continue
        y0, p0 = ref[s.source]
        ey, ep = (-y0 if s.mirrored else y0) + s.yaw, p0 + s.pitch
        errs[s.id] = (abs(float(r["head_yaw"]) - ey), abs(float(r["head_pitch"]) - ep))
    return errs


def summarise(samples: Sequence[Sample], result: dict[str, Any]) -> dict[str, Any]:
    """Per condition: n, face-found %, agreement %, mean abs pose errors; per group: agreement %."""
    if not result["available"]:
        return {}
    rows = {r["id"]: r for r in result["samples"]}
    errs = _pose_errors(samples, result["samples"])
    conds: dict[str, Any] = {}
    for name, group, expected in _table_rows():
        mine = _row_samples(samples, name, group)
        if not mine:
            continue
        e = [errs[s.id] for s in mine if s.id in errs]
        conds[name] = {
            "group": group, "expected": expected, "n": len(mine),
            "face_pct": 100.0 * sum(rows[s.id]["face"] for s in mine) / len(mine),
            "agree_pct": 100.0 * sum(rows[s.id]["agree"] for s in mine) / len(mine),
            "yaw_err": float(np.mean([a for a, _ in e])) if e else None,
            "pitch_err": float(np.mean([b for _, b in e])) if e else None,
            "pose_n": len(e),
        }
    groups = {}
    for g in (AT_CAMERA, TURNED, TURNED_FLAT, MIRRORED, LIGHT, TOO_SMALL, EYES_AVERTED):
        mine = [s for s in samples if s.group == g]
        if mine:
            groups[g] = {"n": len(mine), "agree_pct": 100.0 * sum(rows[s.id]["agree"] for s in mine) / len(mine)}
    return {"conditions": conds, "groups": groups}


def _table_rows() -> list[tuple[str, str, bool | None]]:
    """(row name, group, expected) of the table: each condition, then the averted-eyes sources as one row
    (their samples sit in the at-camera, mirrored and light conditions but carry the other label)."""
    return [(c.name, c.group, c.expected) for c in CONDITIONS] + [(EYES_AVERTED, EYES_AVERTED, False)]


def _row_samples(samples: Sequence[Sample], name: str, group: str) -> list[Sample]:
    """The samples of one table row: a condition's own group, or the whole group for a group row."""
    return [s for s in samples if s.group == group and (name == group or s.condition == name)]


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _deg(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _group_pct(groups: dict[str, Any], key: str) -> str:
    return f"{groups[key]['agree_pct']:.1f}% (n={groups[key]['n']})" if key in groups else "—"


def report(samples: Sequence[Sample], summaries: dict[str, dict[str, Any]], errors: dict[str, str]) -> list[str]:
    """The printed table (markdown, detectors side by side) and the summary lines."""
    names = list(summaries)
    head = "| condition | expected | n |" + "".join(
        f" {d} face % | {d} agree % | {d} yaw err ° | {d} pitch err ° |" for d in names)
    lines = [head, "|---|---|---:|" + "---:|---:|---:|---:|" * len(names)]
    for name, group, expected in _table_rows():
        n = len(_row_samples(samples, name, group))
        if not n:
            continue
        exp = "too small" if expected is None else ("eye contact" if expected else "not eye contact")
        cells = ""
        for d in names:
            c = summaries[d].get("conditions", {}).get(name)
            cells += (f" {_pct(c['face_pct'])} | {_pct(c['agree_pct'])} | {_deg(c['yaw_err'])} |"
                      f" {_deg(c['pitch_err'])} |") if c else " — | — | — | — |"
        label = f"{name}, head frontal (real photo: {', '.join(AVERTED_SOURCES)})" if group == EYES_AVERTED else name
        lines.append(f"| {label} | {exp} | {n} |{cells}")
    lines.append("")
    for d in names:
        if d in errors:
            lines.append(f"{d}: unavailable here ({errors[d]})")
            continue
        g = summaries[d]["groups"]
        at, turned, flat, mir, light, small = (
            _group_pct(g, k) for k in (AT_CAMERA, TURNED, TURNED_FLAT, MIRRORED, LIGHT, TOO_SMALL))
        lines.append(f"{d}: looking at the camera, anywhere in the frame: agreement {at}")
        lines.append(f"{d}: head turned beyond threshold: agreement {turned}")
        lines.append(f"{d}: flat photo turned beyond threshold (no depth, a weaker cue): agreement {flat}")
        lines.append(f"{d}: mirrored {mir}; darker/brighter {light}; too small to judge {small}")
        lines.append(f"{d}: eyes averted with the head frontal (real photo, any position/light): agreement "
                     f"{_group_pct(g, EYES_AVERTED)}")
    return lines


def run(data: Path, out: Path, detectors: Sequence[str], limit: int, video_frames: int, seed: int,
        log: Log = print) -> dict[str, Any]:
    """Build the media under ``out``, write manifest.json, analyse per detector, write results.json."""
    out.mkdir(parents=True, exist_ok=True)
    small_px = EmotionSettings().min_gaze_face_px  # below it no detector may judge gaze
    sources = load_sources(data, limit, video_frames, log)
    if not sources:
        raise SystemExit(f"no usable face sources under {data} (faces/*.jpg, video/*.mp4)")
    samples = build_media(sources, out, seed, small_px)
    manifest = {
        "frame_size": [FRAME_W, FRAME_H], "seed": seed, "limit": limit, "video_frames": video_frames,
        "too_small_px": round(small_px * TOO_SMALL_FACTOR), "min_gaze_face_px": small_px,
        "warps": {"3D": "sidecar.face_geometry.rotate_face_image: the face's landmark mesh rotated in 3D, "
                  "warped triangle by triangle (head and eyes turned together)",
                  "flat": "sidecar.face_geometry.rotate_image_plane: the flat photo rotated about the frame "
                  "centre (the face's centre), focal = frame width"},
        "conditions": [asdict(c) for c in CONDITIONS], "averted_sources": AVERTED_SOURCES,
        "samples": [asdict(s) for s in samples],
        "sign_conventions": "yaw + = face turned toward the image's right; pitch + = down",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log(f"{len(sources)} sources ({sum(s.kind == 'photo' for s in sources)} photos, "
        f"{sum(s.kind == 'video' for s in sources)} video frames) x {len(CONDITIONS)} conditions = "
        f"{len(samples)} samples in {out / 'media'}; seed {seed}")
    results: dict[str, Any] = {}
    summaries: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for d in detectors:
        log(f"analysing with {d} ...")
        results[d] = analyse(samples, out, d)
        summaries[d] = summarise(samples, results[d])
        if not results[d]["available"]:
            errors[d] = results[d]["error"]
        results[d]["summary"] = summaries[d]
    lines = report(samples, summaries, errors)
    (out / "results.json").write_text(json.dumps({"detectors": results}, indent=1) + "\n", encoding="utf-8")
    return {"manifest": manifest, "results": results, "lines": lines}
