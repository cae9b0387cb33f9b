"""WebRTC audio frames to 16 kHz mono float32 (capture only: the audio callback's resampler)."""

from __future__ import annotations

import av
import numpy as np

from pipeline.records import SAMPLE_RATE


class AudioResampler16k:
    """WebRTC ``av.AudioFrame`` (48 kHz stereo s16 packed, 20 ms) -> 16 kHz mono float32.

    Runs in the WebRTC audio callback, so it stays cheap: one FFmpeg swr call per
    frame (anti-aliased, stateful across frames so there are no clicks at frame
    edges) and one numpy mean over the channels. A change of input format (e.g. the
    browser renegotiates to 44.1 kHz mono) rebuilds the resampler instead of failing.
    """

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._input_key: tuple[str, str, int] | None = None
        self.samples_in = 0
        self.samples_out = 0

    def _ensure(self, frame: av.AudioFrame) -> av.AudioResampler:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or key != self._input_key:
            # Keep the channels and average them here, like load_audio: swr's own stereo
            # downmix is -3 dB per channel, which would make live audio 3 dB louder than files.
            self._resampler = av.AudioResampler(format="fltp", rate=self.rate)
            self._input_key = key
        return self._resampler

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        return self.resample(frame)

    def resample(self, frame: av.AudioFrame) -> np.ndarray:
        resampler = self._ensure(frame)
        self.samples_in += frame.samples
        frame.pts = None  # browsers' pts jumps after packet loss; we only need the sample flow
        outs = resampler.resample(frame)
        return self._collect(outs)

    def flush(self) -> np.ndarray:
        """Return the few samples still inside the resampler's filter."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        out = self._collect(self._resampler.resample(None))
        self._resampler = None
        self._input_key = None
        return out

    def _collect(self, outs: list[av.AudioFrame]) -> np.ndarray:
        if not outs:
            return np.zeros(0, dtype=np.float32)
        arrays = [o.to_ndarray() for o in outs]
        planar = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
        data: np.ndarray = planar[0] if planar.shape[0] == 1 else planar.mean(axis=0)
        self.samples_out += data.shape[0]
        return data.astype(np.float32, copy=False)
