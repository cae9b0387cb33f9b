"""Issue 9, items 8 and 9: hostile media and uploads.

8. One answer is capped in length (``max_answer_seconds``): refused from the container
   header before decoding, and again while decoding when the header lied or had no
   length; decoding and pitch work in bounded pieces (memory does not grow with length).
9. Uploads are capped (``max_upload_mb``), streamed to an owner-only temporary file that
   is deleted after the analysis, and errors on the page never show a server path.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import tracemalloc
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import pipeline.media as media
from pipeline.media import MediaTooLongError, check_duration, format_duration, load_audio
from pipeline.settings import Settings, get_settings
from pipeline.speech_metrics import ProsodyAccumulator, prosody_track, yin_pitch
from pipeline.uploads import MB, saved_upload
from sidecar.analyze import AnalyzeRequest, analyze
from tests.pages_support import open_page, page_database

pytestmark = pytest.mark.security

RATE = 16000


# ----------------------------------------------------------------------------- media files


def write_wav(path: Path, seconds: float, rate: int = RATE, channels: int = 1) -> Path:
    """A real PCM WAV of digital silence, written a second at a time."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        second = bytes(2 * channels * rate)
        for _ in range(int(seconds)):
            w.writeframes(second)
    return path


def lying_wav(path: Path, claimed_seconds: float, real_seconds: float = 0.5) -> Path:
    """A tiny WAV whose RIFF header claims ``claimed_seconds`` of 16 kHz mono s16 audio."""
    data = (np.sin(np.arange(int(real_seconds * RATE)) * 0.1) * 8000).astype("<i2").tobytes()
    claimed = int(claimed_seconds * RATE * 2)
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", claimed) + data)
    return path


def live_webm(path: Path, seconds: float) -> Path:
    """Opus in WebM as a live recorder writes it (MediaRecorder, ``-live 1``): no duration anywhere."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate={RATE}",
                    "-t", str(seconds), "-c:a", "libopus", "-live", "1", "-f", "webm", str(path)], check=True)
    return path


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every call of the real audio decoder (it still runs)."""
    calls: list[str] = []
    real = media._decode_audio

    def counting(*args: Any, **kwargs: Any) -> None:
        calls.append("decode")
        real(*args, **kwargs)

    monkeypatch.setattr(media, "_decode_audio", counting)
    return calls


# ----------------------------------------------------------------------------- item 8: duration cap


def test_duration_message_is_plain() -> None:
    assert str(MediaTooLongError(7200, 900)) == (
        "This recording is 2 h 0 min long; answers can be at most 15 min. Trim it or split it into answers.")
    assert [format_duration(s) for s in (9, 75, 900, 1200, 7260)] == ["9 s", "1 min 15 s", "15 min", "20 min",
                                                                      "2 h 1 min"]


def test_lying_wav_header_claiming_2h_is_refused_before_decoding(tmp_path: Path, decode_calls: list[str]) -> None:
    path = lying_wav(tmp_path / "tiny.wav", claimed_seconds=7200)
    assert path.stat().st_size < 20_000
    with pytest.raises(MediaTooLongError) as err:
        load_audio(path, max_seconds=900)
    assert err.value.seconds == pytest.approx(7200)
    assert "2 h 0 min long; answers can be at most 15 min" in str(err.value)
    # Through the upload/CLI path too, refused before any decoder or sidecar starts.
    with pytest.raises(MediaTooLongError):
        analyze(AnalyzeRequest("Q?", audio=path), Settings(data_dir=tmp_path, max_answer_seconds=900))
    assert decode_calls == []
    # Without the cap the same file gets as far as the decoder (which finds it cut off).
    with pytest.raises(media.MediaError, match="truncated"):
        load_audio(path)
    assert decode_calls == ["decode"]


def test_real_20_min_silent_wav_is_refused_from_its_header(tmp_path: Path, decode_calls: list[str]) -> None:
    path = write_wav(tmp_path / "silence.wav", 20 * 60)
    assert path.stat().st_size > 38_000_000
    with pytest.raises(MediaTooLongError, match="This recording is 20 min long; answers can be at most 15 min"):
        check_duration(path, 900)
    with pytest.raises(MediaTooLongError, match="20 min long"):
        analyze(AnalyzeRequest("Q?", audio=path), Settings(data_dir=tmp_path))  # the default cap: 15 min
    assert decode_calls == []


def test_recording_without_a_header_length_is_refused_while_decoding(tmp_path: Path, decode_calls: list[str]) -> None:
    path = live_webm(tmp_path / "live.webm", 20)
    assert check_duration(path, 10) is None  # nothing to refuse it by before decoding
    with pytest.raises(MediaTooLongError) as err:
        load_audio(path, max_seconds=10)
    assert err.value.seconds is None
    assert str(err.value) == ("This recording is longer than 10 s, the most an answer can be. "
                              "Trim it or split it into answers.")
    assert decode_calls == ["decode"]
    with pytest.raises(MediaTooLongError):
        analyze(AnalyzeRequest("Q?", audio=path), Settings(data_dir=tmp_path, max_answer_seconds=10))
    assert len(load_audio(path, max_seconds=30)) == pytest.approx(20 * RATE, abs=RATE // 10)  # under the cap: fine


def test_video_frames_stop_at_the_cap(shared_data: Path, tmp_path: Path) -> None:
    clip = shared_data / "video" / "baseline.mp4"
    with pytest.raises(MediaTooLongError):
        check_duration(clip, 1.0)
    # A live-recorded video has no length in its header: the frame loop refuses past the cap.
    live = tmp_path / "live_video.webm"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                    "-t", "6", "-c:v", "libvpx", "-live", "1", "-f", "webm", str(live)], check=True)
    assert check_duration(live, 3.0) is None
    seen: list[float] = []
    with pytest.raises(MediaTooLongError):
        for t, _ in media.iter_video_frames(live, every_n=1, max_seconds=3.0):
            seen.append(t)
    assert seen and max(seen) <= 3.5
    assert len(list(media.iter_video_frames(live, every_n=1, max_seconds=10.0))) >= 55


# ----------------------------------------------------------------------------- item 8: bounded memory


def _peak_traced(fn: Any) -> tuple[Any, int]:
    """Peak bytes numpy and Python allocated while ``fn`` ran (numpy reports to tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_keeps_only_16k_mono(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "stereo48k.wav", 120, rate=48000, channels=2)  # 23 MB at the source
    audio, peak = _peak_traced(lambda: load_audio(path, max_seconds=900))
    out = audio.nbytes
    assert out == pytest.approx(120 * RATE * 4, rel=0.01)
    # The old decoder kept every frame at 16 kHz stereo, then concatenated: 4x the result.
    assert peak < 1.3 * out, (peak / MB, out / MB)


def test_pitch_memory_does_not_grow_with_length() -> None:
    rng = np.random.default_rng(3)
    peaks = []
    for minutes in (1, 8):
        x = (rng.standard_normal(minutes * 60 * RATE) * 0.05).astype(np.float32)
        _, peak = _peak_traced(lambda x=x: yin_pitch(x))
        peaks.append(peak)
    # Whole-signal YIN needed ~85 bytes per sample (8 min: 650 MB); in blocks it is the block size.
    assert peaks[1] < 1.2 * peaks[0] + 2 * MB, [p / MB for p in peaks]
    assert peaks[1] < 60 * MB


def test_chunked_pitch_equals_the_whole_signal_computation_on_real_speech(shared_data: Path) -> None:
    for name in ("jfk.flac", "multilingual.mp3"):
        audio = load_audio(shared_data / "speech" / name)
        whole_f0, whole_dip = yin_pitch(audio, block_frames=None)  # every frame in one batch, as before
        block_f0, block_dip = yin_pitch(audio, block_frames=64)
        np.testing.assert_allclose(block_f0, whole_f0, rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(block_dip, whole_dip, rtol=1e-9, atol=1e-12)
        assert np.isfinite(whole_f0).sum() > 0.2 * len(whole_f0)  # real voiced speech, not silence
        # Fed as the live worker feeds it: uneven chunks, frames computed a block at a time.
        acc = ProsodyAccumulator(RATE, block_frames=40)
        rng, i = np.random.default_rng(7), 0
        while i < len(audio):
            n = int(rng.integers(100, 12_000))
            acc.feed(audio[i : i + n])
            i += n
        fed = acc.finish()
        whole = prosody_track(audio)
        assert fed.pitch_median_hz is not None and 80 < fed.pitch_median_hz < 300
        assert len(fed.pitch_hz) == len(whole.pitch_hz) == len(audio) // 800
        assert fed.as_dict() == whole.as_dict()
        voiced = [(a, b) for a, b in zip(fed.pitch_hz, whole_f0, strict=True) if a is not None]
        assert all(abs(a - b) <= 0.051 for a, b in voiced)  # rounded to 0.1 Hz


# ----------------------------------------------------------------------------- item 9: uploads


def test_upload_copy_is_private_streamed_and_removed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_upload_mb=2)
    payload = os.urandom(int(1.5 * MB))
    with saved_upload(io.BytesIO(payload), "../../etc/answer.WAV", len(payload), settings) as path:
        assert path.parent == tmp_path / "uploads" and path.suffix == ".wav"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.read_bytes() == payload
    assert not path.exists()
    with pytest.raises(RuntimeError), saved_upload(io.BytesIO(payload), "a.wav", len(payload), settings) as path:
        raise RuntimeError("analysis failed")
    assert not path.exists()
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.fixture
def upload_page(mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The interview page on a real database with a real (unstarted) sidecar: refusals must come first."""
    import ui.session
    from sidecar.supervisor import Sidecar

    monkeypatch.setenv("MOCKAI_MAX_UPLOAD_MB", "1")
    gen = page_database(mongo_uri, tmp_path, monkeypatch, "test_secmedia")
    next(gen)
    sidecar = Sidecar(get_settings(), store=False)  # no workers: analysis reaching it would fail the test
    monkeypatch.setattr(ui.session, "get_sidecar", lambda: sidecar)
    try:
        yield tmp_path
    finally:
        sidecar.stop()
        next(gen, None)


def _upload_step() -> AppTest:
    at = open_page("pages/interview.py")
    at.checkbox(key="consent_box").check().run()
    at.button(key="consent_continue").click().run()
    at.text_input(key="candidate_name").input("Mallory").run()
    at.radio(key="mode").set_value("Upload a recording").run()
    at.button(key="setup_next").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.file_uploader, "the upload step shows a file uploader"
    return at


def _analyse(at: AppTest, name: str, content: bytes) -> str:
    uploader = at.file_uploader[0]
    uploader.set_value((name, content, "application/octet-stream")).run()
    at.button(key="analyse").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert at.file_uploader[0].key != uploader.key and at.file_uploader[0].value is None  # a fresh, empty widget
    return errors[0]


def _no_internals(message: str, data_dir: Path) -> None:
    for leak in ("/tmp", "/", str(data_dir), "upload-", "Errno", "Traceback", "FFmpeg", "InvalidData"):
        assert leak not in message, (leak, message)


def test_upload_over_the_size_cap_is_refused_plainly(upload_page: Path) -> None:
    at = _upload_step()
    assert at.file_uploader[0].proto.max_upload_size_mb == 1  # the browser refuses it first
    message = _analyse(at, "answer.wav", os.urandom(int(1.5 * MB)))
    assert message == ("This file is 1.5 MB; uploads can be at most 1 MB. Trim or compress the recording, "
                       "or upload its audio only.")
    _no_internals(message, upload_page)
    assert list((upload_page / "uploads").glob("*")) == []


def test_corrupt_upload_error_shows_no_path(upload_page: Path) -> None:
    at = _upload_step()
    message = _analyse(at, "answer.mp4", os.urandom(64 * 1024))
    assert "could not be read as audio or video" in message
    _no_internals(message, upload_page)
    assert list((upload_page / "uploads").iterdir()) == []  # the temporary copy is gone


def test_upload_longer_than_an_answer_is_refused_on_the_page(upload_page: Path, tmp_path: Path) -> None:
    at = _upload_step()
    message = _analyse(at, "answer.wav", lying_wav(tmp_path / "long.wav", 7200).read_bytes())
    assert message == "This recording is 2 h 0 min long; answers can be at most 15 min. Trim it or split it into answers."
    assert list((upload_page / "uploads").iterdir()) == []


@pytest.mark.slow
def test_live_answer_is_ended_at_the_cap(shared_data: Path, tmp_path: Path) -> None:
    """A live answer longer than the cap is ended there: its audio stops piling up in memory."""
    import time
    import uuid

    from sidecar.protocol import AnswerStart
    from sidecar.supervisor import Sidecar

    car = Sidecar(Settings(data_dir=tmp_path, max_answer_seconds=4.0), store=False).start()
    try:
        assert car.wait_ready(300), car.status()
        audio = load_audio(shared_data / "speech" / "jfk.flac")  # 11 s, past the 4 s cap
        start = AnswerStart(uuid.uuid4().hex, uuid.uuid4().hex, 0, "Quote a famous speech.",
                            started_ms=int(time.time() * 1000))
        car.start_answer(start)
        for i in range(0, len(audio), 8000):
            car.push_audio(start.answer_id, start.started_ms + i * 1000 // 16000, audio[i : i + 8000])
        result = car.wait_result(start.answer_id, 180)  # nobody called end_answer
        assert result is not None, car.status()
        assert 4.0 < result["audio_seconds"] <= 5.5
        assert "fellow americans" in result["transcript"].lower().replace(",", "")
        assert car.status()["buffered_audio_s"] == 0
    finally:
        car.stop()


def test_an_answer_of_exactly_the_cap_is_accepted(tmp_path: Path) -> None:
    """Opus declares a few ms more than it holds (pre-skip): a file of exactly the cap must pass."""
    path = tmp_path / "exact.ogg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "30",
                    "-c:a", "libopus", str(path)], check=True)
    declared = check_duration(path, 30.0)
    assert declared is not None and declared > 30.0
    assert len(load_audio(path, max_seconds=30.0)) == pytest.approx(30 * RATE, abs=RATE // 20)
    with pytest.raises(MediaTooLongError):
        load_audio(path, max_seconds=29.0)
