"""pipeline.media: decoding real and generated files, and failing clearly on broken ones."""

from __future__ import annotations

import io
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.media import MediaError, iter_video_frames, load_audio, probe
from sidecar.resample import AudioResampler16k

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VIDEO = DATA / "video" / "baseline.mp4"
SPEECH = DATA / "speech"


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(x: np.ndarray, rate: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spec))])


def write_audio(path: Path, channels: np.ndarray, rate: int, codec: str = "pcm_s16le") -> Path:
    """Encode planar float audio (channels, n) with PyAV; the container comes from the suffix."""
    channels = np.atleast_2d(channels).astype(np.float32)
    layout = {1: "mono", 2: "stereo"}[channels.shape[0]]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        pts = 0
        for i in range(0, channels.shape[1], frame_size):
            block = np.ascontiguousarray(channels[:, i : i + frame_size])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += block.shape[1]
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rate = 44100
    left, right = tone(440, 2.0, rate), tone(1000, 2.0, rate, amp=0.25)
    return write_audio(tmp_path_factory.mktemp("media") / "stereo.wav", np.stack([left, right]), rate)


# --------------------------------------------------------------------------- audio


def test_stereo_channel_pick_and_mixdown(stereo_wav: Path) -> None:
    left = load_audio(stereo_wav, channel=0)
    right = load_audio(stereo_wav, channel=1)
    mixed = load_audio(stereo_wav)
    for x in (left, right, mixed):
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - 32000) <= 32
    assert dominant_hz(left) == pytest.approx(440, abs=2)
    assert dominant_hz(right) == pytest.approx(1000, abs=2)
    # Default mixes down: both tones present, each at half its channel's amplitude.
    assert np.abs(mixed - (left + right) / 2).max() < 1e-3


def test_channel_out_of_range(stereo_wav: Path) -> None:
    with pytest.raises(MediaError, match="channel 2 requested but the audio has 2 channel"):
        load_audio(stereo_wav, channel=2)


@pytest.mark.parametrize(
    ("rate", "suffix", "codec"),
    [(8000, ".wav", "pcm_s16le"), (22050, ".flac", "flac"), (44100, ".mp3", "libmp3lame"),
     (48000, ".ogg", "libopus"), (48000, ".m4a", "aac"), (16000, ".wav", "pcm_s16le")],
)
def test_any_rate_and_codec_to_16k(tmp_path: Path, rate: int, suffix: str, codec: str) -> None:
    path = write_audio(tmp_path / f"tone{suffix}", tone(330, 1.5, rate), rate, codec)
    x = load_audio(path)
    assert x.dtype == np.float32
    # Lossy codecs add priming samples / padding: allow 60 ms.
    assert abs(len(x) / 16000 - 1.5) < 0.06
    assert dominant_hz(x) == pytest.approx(330, abs=3)
    mid = x[len(x) // 4 : 3 * len(x) // 4]
    assert float(np.sqrt(np.mean(mid**2))) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)  # level kept


def test_other_rate_argument(stereo_wav: Path) -> None:
    x = load_audio(stereo_wav, rate=8000, channel=0)
    assert abs(len(x) - 16000) <= 16
    assert dominant_hz(x, 8000) == pytest.approx(440, abs=2)


def test_real_speech_files_decode() -> None:
    jfk = load_audio(SPEECH / "jfk.flac")  # 44.1 kHz stereo FLAC despite its name
    assert len(jfk) == 11 * 16000
    hot = load_audio(SPEECH / "hotwords.mp3")
    assert abs(len(hot) / 16000 - 4.0) < 0.05
    video_audio = load_audio(VIDEO)  # AAC track of an MP4
    assert abs(len(video_audio) / 16000 - 3.48) < 0.05


def test_bytes_and_file_objects(stereo_wav: Path) -> None:
    raw = stereo_wav.read_bytes()
    from_path = load_audio(stereo_wav)
    np.testing.assert_allclose(load_audio(raw), from_path, atol=1e-6)
    np.testing.assert_allclose(load_audio(io.BytesIO(raw)), from_path, atol=1e-6)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(MediaError, match="file not found"):
        probe(tmp_path / "nope.mp4")


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_audio(empty)
    with pytest.raises(MediaError, match="0 bytes"):
        load_audio(b"")
    with pytest.raises(MediaError, match="empty"):
        list(iter_video_frames(empty))


def test_folder_is_not_media(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="folder"):
        load_audio(tmp_path)


@pytest.mark.parametrize("content", [b"hello, this is a text file\n" * 50, bytes(range(256)) * 64])
def test_non_media_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.mp3"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="not a readable media file|no samples|corrupt"):
        load_audio(path)
    with pytest.raises(MediaError):
        probe(path) if content[:5] == b"hello" else list(iter_video_frames(path))


def test_corrupt_header(tmp_path: Path, stereo_wav: Path) -> None:
    raw = bytearray(stereo_wav.read_bytes())
    raw[:12] = b"\x00" * 12  # RIFF/WAVE magic gone
    path = tmp_path / "corrupt.wav"
    path.write_bytes(bytes(raw))
    with pytest.raises(MediaError):
        load_audio(path)


@pytest.mark.parametrize("name", ["jfk.flac", "stereo_diarization.wav", "hotwords.mp3"])
def test_truncated_audio(tmp_path: Path, name: str) -> None:
    raw = (SPEECH / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MediaError, match="truncated"):
        load_audio(path)
    # On request the decodable part is returned instead.
    part = load_audio(path, allow_truncated=True)
    assert 0.3 < len(part) / len(load_audio(SPEECH / name)) < 0.7


def test_truncated_video(tmp_path: Path) -> None:
    raw = VIDEO.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(raw[: len(raw) // 3])
    frames: list[float] = []
    with pytest.raises(MediaError, match="truncated"):
        for t, _ in iter_video_frames(path, every_n=1):
            frames.append(t)
    assert 0 < len(frames) < 104  # the frames that exist were delivered before the error
    assert len(list(iter_video_frames(path, every_n=1, allow_truncated=True))) == len(frames)
    with pytest.raises(MediaError, match="truncated"):
        load_audio(path)


def test_moov_less_mp4(tmp_path: Path) -> None:
    raw = VIDEO.read_bytes()
    moov = raw.find(b"moov")
    path = tmp_path / "nomoov.mp4"
    path.write_bytes(raw[: moov - 4] if moov > 4 else raw[:1000])  # the index is gone
    with pytest.raises(MediaError):
        list(iter_video_frames(path))


def test_no_audio_and_no_video_streams(tmp_path: Path, stereo_wav: Path) -> None:
    with pytest.raises(MediaError, match="no video stream"):
        list(iter_video_frames(stereo_wav))
    silent_video = tmp_path / "silent.mp4"
    with av.open(str(silent_video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(silent_video)
    assert probe(silent_video).has_audio is False


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    with wave.open(str(path), "wb") as w:  # a valid WAV header with no samples
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    with pytest.raises(MediaError, match="no samples|not a readable"):
        load_audio(path)


# --------------------------------------------------------------------------- probe and video


def test_probe_video() -> None:
    info = probe(VIDEO)
    assert info.has_video and info.has_audio
    assert info.fps == pytest.approx(30.0)
    assert info.width == 1920 and info.height == 1080
    assert info.duration == pytest.approx(3.48, abs=0.05)
    assert info.video_duration == pytest.approx(3.47, abs=0.05)
    assert info.audio_duration == pytest.approx(3.48, abs=0.05)
    assert info.as_dict()["video_codec"] == "h264"


def test_probe_audio_only() -> None:
    info = probe(SPEECH / "stereo_diarization.wav")
    assert info.has_audio and not info.has_video
    assert info.channels == 2 and info.sample_rate == 16000
    assert info.duration == pytest.approx(5.0)
    assert info.fps is None


def test_iter_video_frames_sampling() -> None:
    frames = list(iter_video_frames(VIDEO, every_n=4, max_width=640))
    assert len(frames) == 26  # 104 frames, every 4th
    times = [t for t, _ in frames]
    assert times[0] == 0.0
    np.testing.assert_allclose(np.diff(times), 4 / 30, atol=1e-3)
    t, img = frames[0]
    assert img.shape == (360, 640, 3) and img.dtype == np.uint8
    assert img.mean() > 10  # a real picture, not a black frame


def test_iter_video_frames_every_frame_small() -> None:
    frames = list(iter_video_frames(VIDEO, every_n=1, max_width=320))
    assert len(frames) == 104
    assert frames[-1][0] == pytest.approx(103 / 30, abs=1e-3)
    assert frames[0][1].shape == (180, 320, 3)
    # max_width larger than the video keeps the native size.
    first = next(iter(iter_video_frames(VIDEO, every_n=50, max_width=4000)))
    assert first[1].shape == (1080, 1920, 3)


def test_iter_video_frames_bad_every_n() -> None:
    with pytest.raises(ValueError):
        list(iter_video_frames(VIDEO, every_n=0))


# --------------------------------------------------------------------------- live audio


def webrtc_frames(signal_48k: np.ndarray) -> list[av.AudioFrame]:
    """Frames as streamlit-webrtc delivers them: 48 kHz stereo s16 packed, 960 samples."""
    pcm = (np.clip(signal_48k, -1, 1) * 32767).astype(np.int16)
    frames = []
    for i in range(0, len(pcm) - 959, 960):
        block = np.repeat(pcm[i : i + 960], 2).reshape(1, -1)  # interleave L=R
        frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frames.append(frame)
    return frames


def test_audio_resampler_16k() -> None:
    frames = webrtc_frames(tone(440, 2.0, 48000))
    assert frames[0].to_ndarray().shape == (1, 1920)
    resampler = AudioResampler16k()
    # CPU time of this thread, not wall time: another process on the cores does not count.
    start = time.thread_time()
    parts = [resampler(f) for f in frames]
    per_frame = (time.thread_time() - start) / len(frames)
    out = np.concatenate(parts + [resampler.flush()])
    assert out.dtype == np.float32
    assert abs(len(out) - 32000) <= 32
    assert dominant_hz(out[1600:]) == pytest.approx(440, abs=2)
    assert np.abs(out[1600:]).max() == pytest.approx(0.5, abs=0.02)
    assert per_frame < 2e-3, f"{per_frame * 1e6:.0f} us of CPU a 20 ms frame is too slow for the WebRTC callback"


def test_audio_resampler_format_change() -> None:
    resampler = AudioResampler16k()
    resampler(webrtc_frames(tone(440, 0.1, 48000))[0])
    mono = av.AudioFrame.from_ndarray(
        (tone(440, 0.02, 44100) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    mono.sample_rate = 44100
    out = resampler(mono)  # a renegotiated stream must not raise
    assert out.dtype == np.float32
