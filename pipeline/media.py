"""Audio and video decoding with PyAV (no ffmpeg binary, no Streamlit).

Everything that reads a recording goes through here so a broken upload fails with
one clear ``MediaError`` instead of an FFmpeg traceback deep inside a model.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, cast

import av
import numpy as np

from pipeline.records import SAMPLE_RATE

Source = str | os.PathLike[str] | bytes | bytearray | BinaryIO

# A file whose decoded length falls short of its declared length by more than this
# (seconds and fraction, both) is reported as truncated rather than silently short.
_TRUNCATION_TOLERANCE_S = 0.5
_TRUNCATION_TOLERANCE_FRACTION = 0.05


# Decoding may run this far past the cap before refusing (resampler padding, rounding).
_CAP_SLACK_S = 0.5

_PUBLIC_UNREADABLE = ("This file could not be read as audio or video: it may be corrupt, cut off, "
                      "or in a format MockAI cannot decode.")


class MediaError(ValueError):
    """A file is missing, empty, corrupt, truncated or has no usable stream.

    ``str()`` names the file and the decoder's words (for logs and the CLI); ``public``
    says what is wrong without any path or decoder detail, for the web page.
    """

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or _PUBLIC_UNREADABLE


def format_duration(seconds: float) -> str:
    """``7200`` -> "2 h 0 min", ``900`` -> "15 min", ``75`` -> "1 min 15 s", ``9`` -> "9 s"."""
    total = int(round(seconds))
    if total >= 3600:
        return f"{total // 3600} h {total % 3600 // 60} min"
    if total >= 60:
        return f"{total // 60} min" + (f" {total % 60} s" if total % 60 else "")
    return f"{total} s"


class MediaTooLongError(MediaError):
    """The recording is longer than one answer may be (``Settings.max_answer_seconds``).

    ``seconds`` is the length the header declares, or None when decoding ran past the
    cap (no header length, or a header that said less).
    """

    def __init__(self, seconds: float | None, limit: float) -> None:
        if seconds is not None:
            text = (f"This recording is {format_duration(seconds)} long; answers can be at most "
                    f"{format_duration(limit)}. Trim it or split it into answers.")
        else:
            text = (f"This recording is longer than {format_duration(limit)}, the most an answer can be. "
                    "Trim it or split it into answers.")
        super().__init__(text, public=text)
        self.seconds, self.limit = seconds, limit

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process queues intact
        return (type(self), (self.seconds, self.limit))


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe`` learns from the container header (nothing is decoded)."""

    path: str
    format_name: str
    duration: float | None
    has_audio: bool
    has_video: bool
    audio_duration: float | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    video_duration: float | None = None
    video_codec: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    video_frames: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _describe(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def _open(source: Source) -> av.container.InputContainer:
    """Open a container, turning every way it can fail into a MediaError."""
    name = _describe(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise MediaError(f"{name}: file not found")
        if path.is_dir():
            raise MediaError(f"{name}: is a folder, not a media file")
        if path.stat().st_size == 0:
            raise MediaError(f"{name}: file is empty (0 bytes)", public="The file is empty (0 bytes).")
        target: Any = str(path)
    elif isinstance(source, bytes | bytearray):
        if not source:
            raise MediaError(f"{name}: no data (0 bytes)", public="The file is empty (0 bytes).")
        target = io.BytesIO(source)
    else:
        target = source
    try:
        return cast("av.container.InputContainer", av.open(target, mode="r"))
    except av.error.FFmpegError as exc:
        # InvalidDataError is what FFmpeg says for text files, random bytes, a moov-less MP4...
        raise MediaError(f"{name}: not a readable media file ({exc.__class__.__name__}: {exc})") from exc
    except (OSError, EOFError) as exc:
        raise MediaError(f"{name}: cannot be read ({exc})") from exc


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _stream_duration(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    duration = _seconds(stream.duration, stream.time_base)
    if duration is None and container.duration is not None:
        duration = container.duration / av.time_base
    return duration


def _wav_declared_seconds(source: Source) -> float | None:
    """Length the RIFF header of a WAV promises.

    FFmpeg sizes a WAV by the file, so a cut-off upload looks complete to it; the
    header's data-chunk size still tells the truth. None when not a WAV or unknown.
    """
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as fh:
                head = fh.read(4096)
        elif isinstance(source, bytes | bytearray):
            head = bytes(source[:4096])
        else:
            return None
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and pos + 16 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        if chunk == b"data":
            # 0 and 0xFFFFFFFF mean "unknown" (written while streaming).
            if not byte_rate or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)
    return None


def _declared_seconds(container: av.container.InputContainer, source: Source) -> float | None:
    """The longest length any part of the header declares (container, streams, RIFF data size)."""
    values = [container.duration / av.time_base if container.duration is not None else None]
    values += [_seconds(s.duration, s.time_base) for s in (*container.streams.audio, *container.streams.video)]
    if container.format.name == "wav":
        values.append(_wav_declared_seconds(source))
    known = [v for v in values if v is not None and v > 0]
    return max(known) if known else None


def _refuse_long_header(container: av.container.InputContainer, source: Source, max_seconds: float | None) -> None:
    if max_seconds is None:
        return
    declared = _declared_seconds(container, source)
    # The slack: an Opus file of exactly the cap declares a few ms more (pre-skip, page granules).
    if declared is not None and declared > max_seconds + _CAP_SLACK_S:
        raise MediaTooLongError(declared, max_seconds)


def check_duration(source: Source, max_seconds: float) -> float | None:
    """Refuse (MediaTooLongError) a recording whose header says it is longer than ``max_seconds``.

    Reads the header only, nothing is decoded. Returns the declared length (None when the
    header has none: the decoders count samples against the cap as they go).
    """
    container = _open(source)
    try:
        _refuse_long_header(container, source, max_seconds)
        return _declared_seconds(container, source)
    finally:
        container.close()


def probe(path: Source) -> MediaInfo:
    """Durations, fps and stream presence from the header; MediaError if unusable."""
    container = _open(path)
    try:
        audio = container.streams.audio[0] if container.streams.audio else None
        video = container.streams.video[0] if container.streams.video else None
        if audio is None and video is None:
            raise MediaError(f"{_describe(path)}: contains no audio or video stream")
        fps: float | None = None
        if video is not None:
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else None
        return MediaInfo(
            path=_describe(path),
            format_name=container.format.name,
            duration=container.duration / av.time_base if container.duration is not None else None,
            has_audio=audio is not None,
            has_video=video is not None,
            audio_duration=_stream_duration(audio, container) if audio is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
            video_duration=_stream_duration(video, container) if video is not None else None,
            video_codec=video.codec_context.name if video is not None else None,
            fps=fps,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            video_frames=(video.frames or None) if video is not None else None,
        )
    finally:
        container.close()


class _SampleBuffer:
    """Decoded mono samples in one preallocated float32 array (no list of frames to concatenate)."""

    def __init__(self, expected: int) -> None:
        self.data = np.empty(max(expected, 1024), dtype=np.float32)
        self.n = 0

    def add(self, chunk: np.ndarray) -> None:
        need = self.n + len(chunk)
        if need > len(self.data):  # no or a short header length: grow by half
            grown = np.empty(max(need, len(self.data) * 3 // 2), dtype=np.float32)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = chunk
        self.n = need

    def array(self) -> np.ndarray:
        if self.n < 0.9 * len(self.data):  # do not keep a mostly empty buffer alive
            return self.data[: self.n].copy()
        return self.data[: self.n]


def load_audio(
    path_or_file: Source,
    rate: int = SAMPLE_RATE,
    channel: int | None = None,
    *,
    allow_truncated: bool = False,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode the first audio stream to float32 mono at ``rate`` Hz.

    ``channel`` picks one channel (0 = left) of a multi-channel file; by default all
    channels are averaged. A file shorter than its header says raises MediaError
    unless ``allow_truncated`` (then the decodable part is returned).

    With ``max_seconds``, a header that declares more is refused before anything is
    decoded, and decoding stops with MediaTooLongError once it has produced more
    (a header that lied or had no length). Decoding streams frame by frame into one
    mono ``rate`` Hz buffer: nothing is held at the source rate or channel count.
    """
    name = _describe(path_or_file)
    container = _open(path_or_file)
    try:
        if not container.streams.audio:
            raise MediaError(f"{name}: contains no audio stream", public="The file contains no audio.")
        _refuse_long_header(container, path_or_file, max_seconds)
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or 0
        if channel is not None and not 0 <= channel < max(channels, 1):
            raise MediaError(f"{name}: channel {channel} requested but the audio has {channels} channel(s)")
        declared = _stream_duration(stream, container)
        if container.format.name == "wav":
            declared = _wav_declared_seconds(path_or_file) or declared
        limit = None if max_seconds is None else int((max_seconds + _CAP_SLACK_S) * rate)
        expected = int(((declared or 60.0) + 1.0) * rate)
        buffer = _SampleBuffer(expected if limit is None else min(expected, limit + rate))
        _decode_audio(container, stream, rate, channel, buffer, limit, max_seconds, name, allow_truncated)
    finally:
        container.close()

    decoded = buffer.n / rate
    if declared and not allow_truncated:
        missing = declared - decoded
        if missing > _TRUNCATION_TOLERANCE_S and missing > _TRUNCATION_TOLERANCE_FRACTION * declared:
            raise MediaError(f"{name}: truncated: decoded {decoded:.2f} s of a declared {declared:.2f} s",
                             public="The recording is cut off: it stops well before the length its header gives.")
    return buffer.array()


def _decode_audio(container: av.container.InputContainer, stream: av.stream.Stream, rate: int, channel: int | None,
                  buffer: _SampleBuffer, limit: int | None, max_seconds: float | None, name: str,
                  allow_truncated: bool) -> None:
    """Decode, resample to ``rate`` and mix (or pick) to mono, frame by frame, into ``buffer``."""
    # Keep the source layout (swr mixes by layout rules we do not want); mix or pick below.
    resampler = av.AudioResampler(format="fltp", rate=rate)

    def add(outs: list[av.AudioFrame]) -> None:
        for out in outs:
            planar = out.to_ndarray()
            if channel is not None:
                buffer.add(planar[min(channel, planar.shape[0] - 1)])
            else:
                buffer.add(planar[0] if planar.shape[0] == 1 else planar.mean(axis=0))
        if limit is not None and buffer.n > limit:
            raise MediaTooLongError(None, max_seconds or 0.0)

    try:
        for frame in container.decode(stream):
            frame.pts = None  # resample by sample count; broken pts must not drop audio
            add(resampler.resample(cast(av.AudioFrame, frame)))
        add(resampler.resample(None))
    except av.error.FFmpegError as exc:
        if not (allow_truncated and buffer.n):
            raise MediaError(f"{name}: corrupt or truncated audio ({exc})") from exc
    if not buffer.n:
        raise MediaError(f"{name}: audio stream decodes to no samples (empty or corrupt)")


def iter_video_frames(
    path: Source, every_n: int = 4, max_width: int = 640, *, allow_truncated: bool = False,
    max_seconds: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(t_seconds, bgr uint8 array)`` for every ``every_n``-th decoded frame.

    ``t`` is the frame's presentation time relative to the stream start; frames wider
    than ``max_width`` are downscaled (aspect kept) inside swscale, which is far cheaper
    than resizing the full-size BGR array afterwards. A file that stops well before
    its declared duration raises MediaError after its last frame (unless
    ``allow_truncated``): the frames already yielded are real, the rest is missing.
    With ``max_seconds``, a longer header is refused before the first frame and a frame
    past it raises MediaTooLongError.
    """
    if every_n < 1:
        raise ValueError("every_n must be >= 1")
    name = _describe(path)
    container = _open(path)
    try:
        if not container.streams.video:
            raise MediaError(f"{name}: contains no video stream", public="The file contains no video.")
        _refuse_long_header(container, path, max_seconds)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 90000)
        start = stream.start_time
        rate = stream.average_rate or stream.guessed_rate
        declared = _stream_duration(stream, container)
        index = -1
        yielded = 0
        last_t = 0.0
        try:
            for frame in container.decode(stream):
                index += 1
                if frame.pts is not None:
                    if start is None:
                        start = frame.pts
                    t = float((frame.pts - start) * time_base)
                else:  # no timestamps: fall back to the nominal frame rate
                    t = index / float(rate) if rate else float(index)
                last_t = max(last_t, t)
                if max_seconds is not None and t > max_seconds + _CAP_SLACK_S:
                    raise MediaTooLongError(None, max_seconds)
                if index % every_n:
                    continue
                width, height = frame.width, frame.height
                if width > max_width:
                    height = max(2, round(height * max_width / width / 2) * 2)
                    width = max_width
                image = frame.to_ndarray(width=width, height=height, format="bgr24")
                yielded += 1
                yield t, image
        except av.error.FFmpegError as exc:
            raise MediaError(f"{name}: corrupt or truncated video ({exc})") from exc
        if yielded == 0:
            raise MediaError(f"{name}: video stream decodes to no frames (empty or corrupt)")
        frame_s = 1.0 / float(rate) if rate else 0.0
        missing = (declared or 0.0) - (last_t + frame_s)
        if not allow_truncated and missing > _TRUNCATION_TOLERANCE_S and missing > _TRUNCATION_TOLERANCE_FRACTION * (declared or 0.0):
            raise MediaError(f"{name}: truncated: video stops at {last_t + frame_s:.2f} s of a declared {declared:.2f} s")
    finally:
        container.close()
