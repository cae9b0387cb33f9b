"""The WebRTC callbacks, driven directly with real av frames (AppTest cannot hold webrtc_streamer)."""

from __future__ import annotations

import random
import threading
from fractions import Fraction

import av
import numpy as np

from sidecar.capture import HANDOFF_MAX, Capture
from sidecar.clock import TrackClock
from sidecar.ring import FrameRing


class RingAndAudio:
    """The sidecar's input side: a real shared-memory ring, audio collected in order."""

    def __init__(self) -> None:
        self.ring = FrameRing(64)
        self.audio: list[tuple[str, int, np.ndarray]] = []

    def push_frame(self, image, t_ms, session_id, answer_id, block=False):
        return self.ring.put(image, t_ms, session_id, answer_id, block=block)

    def push_audio(self, answer_id, t_ms, samples):
        self.audio.append((answer_id, t_ms, samples))


def _video_frame(i: int, shape=(480, 640, 3)) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.full(shape, i % 255, np.uint8), format="bgr24")
    f.pts, f.time_base = i * 3000, Fraction(1, 90000)  # 30 fps on the RTP video clock
    return f


def _audio_frame(i: int) -> av.AudioFrame:
    t = (np.arange(960) + i * 960) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    f = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
    f.sample_rate, f.pts, f.time_base = 48000, i * 960, Fraction(1, 48000)
    return f


def test_track_clock_follows_media_time_not_arrival():
    clock = TrackClock()
    arrivals = [1000.0 + i / 30 + random.uniform(0, 0.2) for i in range(60)]  # up to 200 ms jitter
    stamps = [clock.stamp(i * 3000, Fraction(1, 90000), now_s=a) for i, a in enumerate(arrivals)]
    steps = np.diff(stamps)
    assert np.all(np.abs(steps - 1000 / 30) <= 1)
    assert stamps[0] == round(arrivals[0] * 1000)
    # A sender restart (media time jumps back) re-anchors instead of going back in time.
    assert clock.stamp(0, Fraction(1, 90000), now_s=2000.0) == 2_000_000 and clock.reanchors == 1


def _frame_at(pts_90k: int, shape=(48, 64, 3)) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.zeros(shape, np.uint8), format="bgr24")
    f.pts, f.time_base = pts_90k, Fraction(1, 90000)
    return f


def _kept_stamps(cap: Capture, pts: list[int]) -> list[int]:
    """Feed frames with these RTP pts through the real callback; the media-time stamps of the kept ones."""
    kept = []
    for p in pts:
        before = cap.frames_sampled + cap.frames_dropped  # kept: handed over, or dropped as the hand-off lags
        cap.on_video(_frame_at(p))
        if cap.frames_sampled + cap.frames_dropped > before:
            kept.append(cap.video_clock.stamp(p, Fraction(1, 90000)))  # same pts: the same stamp again
    return kept


def test_video_callback_samples_by_media_time_into_the_ring():
    sink = RingAndAudio()
    cap = Capture(sink, analysed_fps=7.5)
    cap.aim("sess", "ans")
    for i in range(120):
        out = _video_frame(i)
        assert cap.on_video(out) is out
        if i % 4 == 3:
            assert cap.flush()  # the copier thread keeps up at 30 fps; here frames come faster
    frames = []
    while (f := sink.ring.get()) is not None:
        frames.append(f)
    assert cap.frames_seen == 120 and cap.frames_sampled == 30 and len(frames) == 30
    steps = np.diff([f.t_ms for f in frames])
    assert np.all(np.abs(steps - 4000 / 30) <= 1), steps  # 7.5 fps on the media clock
    assert frames[0].session_id == "sess" and frames[0].answer_id == "ans"
    print(f"\nvideo callback p99 {cap.stats()['video_p99_ms']:.3f} ms over 120 frames")
    sink.ring.close()


def test_any_faster_camera_gives_the_analysed_rate():
    """15, 20, 25 or 30 fps from the browser (10 s each): 7.5 frames analysed per second of media time,
    never two closer than 3/4 of the step, never a gap over 1 1/4 steps beyond the camera's own."""
    for camera_fps in (15, 20, 25, 30):
        sink = RingAndAudio()
        cap = Capture(sink, analysed_fps=7.5)
        kept = _kept_stamps(cap, [round(i * 90000 / camera_fps) for i in range(10 * camera_fps)])
        assert len(kept) in (75, 76), (camera_fps, len(kept))
        steps = np.diff(kept)
        assert steps.min() >= 0.75 * 1000 / 7.5 - 1, (camera_fps, steps)
        assert steps.max() <= 1000 / 7.5 + 1000 / camera_fps + 1, (camera_fps, steps)
        assert cap.frames_seen == 10 * camera_fps
        sink.ring.close()


def test_jittered_and_slower_cameras():
    rng = np.random.default_rng(7)
    # A real camera's capture times jitter by a few ms around 15 fps: still every 2nd frame on average.
    pts = np.cumsum(rng.normal(6000, 450, 300)).astype(int)
    kept = _kept_stamps(Capture(RingAndAudio(), analysed_fps=7.5), [int(p) for p in pts])
    assert abs(len(kept) - 150) <= 2, len(kept)
    # A camera slower than the analysed rate: every frame it sends is analysed.
    kept = _kept_stamps(Capture(RingAndAudio(), analysed_fps=7.5), [i * 18000 for i in range(50)])  # 5 fps
    assert len(kept) == 50


def test_a_gap_in_media_time_restarts_the_schedule():
    cap = Capture(RingAndAudio(), analysed_fps=7.5)
    first = _kept_stamps(cap, [i * 3000 for i in range(30)])  # 1 s at 30 fps
    # Two seconds without frames (the track paused): the first frame after it is kept at once,
    # and no burst follows to "catch up" the missed samples.
    after = _kept_stamps(cap, [90000 * 3 + i * 3000 for i in range(30)])
    assert len(first) in (7, 8) and len(after) in (7, 8), (first, after)
    assert after[0] - first[-1] >= 2000 and min(np.diff(after)) >= 100


def test_analysed_fps_must_be_positive():
    for bad in (0, -1.0, float("nan")):
        try:
            Capture(RingAndAudio(), analysed_fps=bad)
        except ValueError as e:
            assert "analysed_fps" in str(e)
        else:
            raise AssertionError(f"analysed_fps={bad} accepted")


def test_preview_is_not_stored_and_big_frames_are_fitted():
    sink = RingAndAudio()
    cap = Capture(sink, analysed_fps=30)
    for i in range(3):
        cap.on_video(_video_frame(i, (1080, 1920, 3)))
    assert cap.flush()
    assert sink.ring.stats()["frames_in"] == 0 and cap.preview.shape == (360, 640, 3)
    cap.aim("s", "a")
    cap.on_video(_video_frame(3, (1280, 720, 3)))  # portrait: fits the slot's height
    assert cap.flush()
    f = sink.ring.get()
    assert f.image.shape[0] <= 480 and f.image.shape[1] <= 640
    sink.ring.close()


class StalledSidecar(RingAndAudio):
    """A sidecar whose ring takes a lock someone else holds: the copier thread stalls on it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def push_frame(self, image, t_ms, session_id, answer_id, block=False):
        self.gate.wait(10)
        return super().push_frame(image, t_ms, session_id, answer_id, block)


def test_video_callback_never_waits_for_the_copier():
    sink = StalledSidecar()
    cap = Capture(sink, analysed_fps=30)
    cap.aim("s", "a")
    for i in range(40):
        cap.on_video(_video_frame(i))
    # HANDOFF_MAX frames wait for the stalled hand-off thread; the rest were dropped and counted.
    assert cap.frames_seen == 40 and cap.frames_sampled == HANDOFF_MAX and cap.frames_dropped == 40 - HANDOFF_MAX
    assert max(cap.video_timer.cpu) < 5  # ms: no callback did the hand-off thread's work
    sink.gate.set()
    assert cap.flush()
    got = [sink.ring.get() for _ in range(cap.frames_sampled)]
    assert [f.t_ms for f in got] == sorted(f.t_ms for f in got)  # handed over in order
    assert cap.stats()["copy_p99_ms"] is not None
    sink.ring.close()


def test_audio_callback_resamples_to_16k_mono_with_media_time():
    sink = RingAndAudio()
    cap = Capture(sink)
    cap.on_audio(_audio_frame(0))  # preview: level measured, nothing stored
    assert cap.flush()
    assert not sink.audio and cap.audio_level > 0.1
    cap.aim("s", "a")
    for i in range(1, 101):
        cap.on_audio(_audio_frame(i))
    assert cap.flush()
    total = sum(len(s) for _, _, s in sink.audio)
    assert abs(total - 100 * 320) <= 320 and all(s.dtype == np.float32 for _, _, s in sink.audio)
    stamps = [t for _, t, _ in sink.audio]
    assert np.all(np.abs(np.diff(stamps) - 20) <= 1)
    print(f"\naudio callback p99 {cap.stats()['audio_p99_ms']:.3f} ms")
    sink.ring.close()
