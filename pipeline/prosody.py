"""Pitch and energy of the answer audio: frame energy (dBFS), batched YIN pitch, the streaming
``ProsodyAccumulator`` and the ``ProsodyTrack`` it yields (pure numpy, bounded memory)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.records import SAMPLE_RATE
from pipeline.speech_options import SpeechMetricsOptions

# Energy below this is reported as this (digital silence would otherwise be -inf dB).
ENERGY_FLOOR_DB = -100.0

# Frames per batched YIN FFT and samples per energy block: bounds the working memory
# (about 30 MB at 16 kHz) however long the audio is; the results do not depend on it.
YIN_BLOCK_FRAMES = 512
_ENERGY_BLOCK_SAMPLES = 1 << 20


def frame_energy_db(audio: np.ndarray, rate: int = SAMPLE_RATE, hop_seconds: float = 0.05) -> np.ndarray:
    """RMS level in dBFS of consecutive ``hop_seconds`` frames (floored at ENERGY_FLOOR_DB)."""
    hop = max(1, round(hop_seconds * rate))
    n = len(audio) // hop
    out = np.empty(n, dtype=np.float64)
    step = max(1, _ENERGY_BLOCK_SAMPLES // hop)
    for a in range(0, n, step):  # in blocks: a float64 copy of the whole signal is 2x its size
        b = min(n, a + step)
        out[a:b] = _energy_db(audio[a * hop : b * hop], hop)
    return out


def _energy_db(samples: np.ndarray, hop: int) -> np.ndarray:
    frames = np.asarray(samples, dtype=np.float64).reshape(-1, hop)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        db = 20.0 * np.log10(rms)
    out: np.ndarray = np.maximum(db, ENERGY_FLOOR_DB)
    return out


@dataclass(frozen=True)
class _YinGeometry:
    hop: int
    tau_min: int
    tau_max: int
    win: int  # integration window: at least one longest period
    length: int  # samples one frame looks at (window + longest lag + 1)

    @classmethod
    def of(cls, rate: int, hop_seconds: float, fmin: float, fmax: float) -> _YinGeometry:
        tau_max = int(np.ceil(rate / fmin))
        win = max(tau_max, round(0.025 * rate))
        return cls(max(1, round(hop_seconds * rate)), max(2, int(rate / fmax)), tau_max, win, win + tau_max + 1)

    def window_start(self, frame: int) -> int:
        """Absolute sample index where frame ``frame``'s window starts (it is centred on its hop)."""
        return frame * self.hop + self.hop // 2 - self.length // 2


def _windows(buf: np.ndarray, buf_start: int, signal_len: int, a: int, b: int, g: _YinGeometry) -> np.ndarray:
    """float64 windows of frames ``[a, b)``; samples before 0 or from ``signal_len`` on are zero.

    ``buf`` holds the signal from absolute index ``buf_start`` on (it must cover every
    in-signal sample the windows touch).
    """
    lo, hi = g.window_start(a), g.window_start(b - 1) + g.length
    seg = np.zeros(hi - lo, dtype=np.float64)
    s0, s1 = max(lo, 0), min(hi, signal_len)
    if s1 > s0:
        seg[s0 - lo : s1 - lo] = buf[s0 - buf_start : s1 - buf_start]
    starts = np.arange(b - a) * g.hop
    windows: np.ndarray = seg[starts[:, None] + np.arange(g.length)[None, :]]
    return windows


def _yin_frames(frames: np.ndarray, rate: int, g: _YinGeometry, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """YIN on a batch of windows (rows): f0 in Hz (NaN where unvoiced) and the CMND dip."""
    n_frames = frames.shape[0]
    tau_min, tau_max, win, length = g.tau_min, g.tau_max, g.win, g.length
    frames -= frames.mean(axis=1, keepdims=True)
    a = frames[:, :win]
    nfft = 1 << int(np.ceil(np.log2(length + win)))
    # Cross-correlation r(tau) = sum_j a_j * x_{j+tau} for tau = 0..tau_max.
    spec = np.conj(np.fft.rfft(a, nfft, axis=1)) * np.fft.rfft(frames, nfft, axis=1)
    corr = np.fft.irfft(spec, nfft, axis=1)[:, : tau_max + 1]
    sq = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(frames * frames, axis=1)], axis=1)
    taus = np.arange(tau_max + 1)
    e0 = sq[:, win][:, None]
    e_tau = sq[:, taus + win] - sq[:, taus]
    diff = np.maximum(e0 + e_tau - 2.0 * corr, 0.0)
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmnd[:, 1:] = np.where(cum > 0, diff[:, 1:] * taus[1:] / cum, 1.0)
    search = cmnd[:, tau_min : tau_max + 1]
    below = search < threshold
    voiced = below.any(axis=1)
    # First dip under the threshold, then walk down to its local minimum (YIN step 4).
    pos = np.where(voiced, np.argmax(below, axis=1), np.argmin(search, axis=1))
    rows = np.arange(n_frames)
    for _ in range(search.shape[1]):
        nxt = np.minimum(pos + 1, search.shape[1] - 1)
        move = search[rows, nxt] < search[rows, pos]
        if not move.any():
            break
        pos = np.where(move, nxt, pos)
    tau = pos + tau_min
    # Parabolic interpolation around the dip for sub-sample period accuracy.
    lo = np.clip(tau - 1, 1, tau_max)
    hi = np.clip(tau + 1, 1, tau_max)
    y0, y1, y2 = cmnd[rows, lo], cmnd[rows, tau], cmnd[rows, hi]
    denom = y0 - 2.0 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (y0 - y2) / denom, 0.0)
    shift = np.clip(shift, -1.0, 1.0)
    f0 = rate / (tau + shift)
    f0 = np.where(voiced & (tau > tau_min) & (tau < tau_max), f0, np.nan)
    return f0, search[rows, pos]


def yin_pitch(
    audio: np.ndarray,
    rate: int = SAMPLE_RATE,
    hop_seconds: float = 0.05,
    fmin: float = 65.0,
    fmax: float = 400.0,
    threshold: float = 0.2,
    block_frames: int | None = YIN_BLOCK_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised YIN: f0 in Hz (NaN where unvoiced) and the CMND dip per hop.

    Frame ``i`` is centred on hop ``i``'s centre. The difference functions of
    ``block_frames`` frames at a time are computed with one batched FFT (a minute of
    audio takes a few tens of milliseconds); ``None`` does the whole signal at once,
    which gives the same numbers with memory growing with its length (about 85 bytes
    per input sample at 16 kHz: 12 GB for two hours).
    """
    audio = np.asarray(audio).reshape(-1)
    g = _YinGeometry.of(rate, hop_seconds, fmin, fmax)
    n_frames = len(audio) // g.hop
    f0, dip = np.empty(n_frames), np.empty(n_frames)
    step = n_frames if block_frames is None else max(1, block_frames)
    for a in range(0, n_frames, max(step, 1)):
        b = min(n_frames, a + step)
        f0[a:b], dip[a:b] = _yin_frames(_windows(audio, 0, len(audio), a, b, g), rate, g, threshold)
    return f0, dip


class ProsodyAccumulator:
    """``prosody_track`` fed piece by piece, as audio arrives.

    Keeps only the audio the next frames still need and the per-frame results (three
    floats every ``hop_seconds``); frames are computed ``block_frames`` at a time. The
    result equals ``prosody_track`` of the whole signal.
    """

    def __init__(self, rate: int = SAMPLE_RATE, options: SpeechMetricsOptions | None = None,
                 block_frames: int = YIN_BLOCK_FRAMES) -> None:
        self.rate = rate
        self.opts = options or SpeechMetricsOptions()
        self.block_frames = max(1, block_frames)
        self._g = _YinGeometry.of(rate, self.opts.hop_seconds, self.opts.pitch_min_hz, self.opts.pitch_max_hz)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._chunks: list[np.ndarray] = []  # arrived since the last computation
        self.samples = 0  # samples received so far
        self._done = 0  # frames computed so far
        self._f0: list[np.ndarray] = []
        self._energy: list[np.ndarray] = []

    def feed(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not x.size:
            return
        self._chunks.append(x)
        self.samples += len(x)
        if self._ready() - self._done >= self.block_frames:
            self._compute(self._ready())

    def _ready(self) -> int:
        """Frames whose hop and YIN window have fully arrived."""
        g = self._g
        tail = g.window_start(0) + g.length  # window end of frame 0
        by_window = (self.samples - tail) // g.hop + 1 if self.samples >= tail else 0
        return max(0, min(self.samples // g.hop, by_window))

    def _compute(self, upto: int) -> None:
        g = self._g
        if self._chunks:
            parts = [self._buf, *self._chunks] if self._buf.size else self._chunks
            self._buf = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._chunks = []
        for a in range(self._done, upto, self.block_frames):
            b = min(upto, a + self.block_frames)
            self._energy.append(_energy_db(self._buf[a * g.hop - self._buf_start : b * g.hop - self._buf_start], g.hop))
            frames = _windows(self._buf, self._buf_start, self.samples, a, b, g)
            self._f0.append(_yin_frames(frames, self.rate, g, self.opts.yin_threshold)[0])
        self._done = max(self._done, upto)
        keep = max(0, min(self._done * g.hop, g.window_start(self._done)))
        if keep > self._buf_start:  # what no later frame needs goes
            self._buf = self._buf[keep - self._buf_start :].copy()
            self._buf_start = keep

    def finish(self) -> ProsodyTrack:
        """The track of everything fed (the last frames see zeros past the end, like the whole-signal YIN)."""
        self._compute(self.samples // self._g.hop)
        self._buf, self._chunks = np.zeros(0, dtype=np.float32), []
        energy = np.concatenate(self._energy) if self._energy else np.zeros(0)
        f0 = np.concatenate(self._f0) if self._f0 else np.zeros(0)
        return _track(energy, f0, self.opts)


@dataclass
class ProsodyTrack:
    """Energy and pitch every ``hop_seconds``; pitch is None where unvoiced."""

    hop_seconds: float
    t: list[float]
    energy_db: list[float]
    pitch_hz: list[float | None]
    voiced_fraction: float
    pitch_median_hz: float | None
    pitch_p10_hz: float | None
    pitch_p90_hz: float | None
    pitch_range_semitones: float | None  # p90/p10 spread: low = monotone delivery

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prosody_track(audio: np.ndarray, rate: int = SAMPLE_RATE, options: SpeechMetricsOptions | None = None) -> ProsodyTrack:
    """Energy and pitch of a whole signal, computed in bounded blocks (``ProsodyAccumulator``)."""
    acc = ProsodyAccumulator(rate, options)
    acc.feed(audio)
    return acc.finish()


def _track(energy: np.ndarray, f0: np.ndarray, opts: SpeechMetricsOptions) -> ProsodyTrack:
    n = min(len(energy), len(f0))
    energy, f0 = energy[:n], f0[:n]
    f0 = np.where(energy >= opts.voiced_min_db, f0, np.nan)
    voiced = f0[~np.isnan(f0)]
    t = (np.arange(n) + 0.5) * opts.hop_seconds
    stats: dict[str, float | None] = {"median": None, "p10": None, "p90": None, "range": None}
    if voiced.size >= 3:
        p10, med, p90 = np.percentile(voiced, [10, 50, 90])
        stats = {"median": round(float(med), 1), "p10": round(float(p10), 1), "p90": round(float(p90), 1),
                 "range": round(float(12.0 * np.log2(p90 / p10)), 2)}
    return ProsodyTrack(
        hop_seconds=opts.hop_seconds,
        t=[round(float(x), 3) for x in t],
        energy_db=[round(float(x), 1) for x in energy],
        pitch_hz=[None if np.isnan(x) else round(float(x), 1) for x in f0],
        voiced_fraction=round(float(voiced.size / n), 3) if n else 0.0,
        pitch_median_hz=stats["median"],
        pitch_p10_hz=stats["p10"],
        pitch_p90_hz=stats["p90"],
        pitch_range_semitones=stats["range"],
    )
