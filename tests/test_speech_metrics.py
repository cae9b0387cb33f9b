"""pipeline.speech_metrics on synthetic words and audio (no model, fast)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.evaluate import word_error_rate
from pipeline.settings import Settings
from pipeline.speech_metrics import (
    SpeechMetricsOptions,
    compute_speech_metrics,
    find_fillers,
    find_pauses,
    frame_energy_db,
    normalize_tokens,
    pace_band,
    pace_track,
    prosody_track,
    words_per_minute,
)

RATE = 16000


def make_words(text: str, start: float = 0.0, step: float = 0.5, dur: float = 0.3) -> list[dict]:
    return [
        {"word": w, "start": round(start + i * step, 3), "end": round(start + i * step + dur, 3), "probability": 0.9}
        for i, w in enumerate(text.split())
    ]


def sine(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --------------------------------------------------------------------------- pace


def test_wpm_steady_speech() -> None:
    words = make_words(" ".join(["word"] * 60), step=0.5)  # 2 words a second
    # 60 words from 0.0 to 29.8 s.
    assert words_per_minute(words) == pytest.approx(60 / 29.8 * 60, rel=1e-6)
    assert words_per_minute(words, start=0.0, end=30.0) == pytest.approx(120.0)


def test_wpm_too_short_or_empty_is_none() -> None:
    assert words_per_minute([]) is None
    assert words_per_minute(make_words("hi there")) is None  # 0.8 s is no pace
    assert words_per_minute([{"word": " ", "start": 0, "end": 5}]) is None


def test_pace_band() -> None:
    assert pace_band(None, 110, 170) is None
    assert pace_band(90, 110, 170) == "slow"
    assert pace_band(140, 110, 170) == "ok"
    assert pace_band(200, 110, 170) == "fast"


def test_pace_track_detects_slow_down() -> None:
    fast = make_words(" ".join(["a"] * 60), start=0.0, step=0.3)  # 200 wpm for 18 s
    slow = make_words(" ".join(["b"] * 20), start=18.0, step=1.0)  # 60 wpm for 20 s
    track = pace_track(fast + slow, window=10.0, step=1.0)
    assert track[0]["t"] == pytest.approx(10.0)
    assert track[0]["wpm"] == pytest.approx(198.0, abs=7)
    assert track[-1]["wpm"] == pytest.approx(60.0, abs=7)
    assert all(set(p) == {"t", "wpm"} for p in track)
    ts = [p["t"] for p in track]
    assert ts == sorted(ts) and ts[-1] == pytest.approx(37.3)


def test_pace_track_short_answer_and_empty() -> None:
    assert pace_track([]) == []
    short = make_words("one two three four five six seven eight", step=0.5)  # 3.8 s
    track = pace_track(short, window=10.0)
    assert len(track) == 1 and track[0]["wpm"] == pytest.approx(8 / 3.8 * 60, abs=0.1)


# --------------------------------------------------------------------------- fillers


def test_fillers_single_multiword_case_and_punctuation() -> None:
    words = make_words("Um, so I, you know, think LIKE... Ummm the you-know thing uh. You Know!")
    found = find_fillers(words, ("um", "uh", "like", "you know", "sort of"))
    assert [f["phrase"] for f in found] == ["um", "you know", "like", "um", "you know", "uh", "you know"]
    you_know = found[1]
    assert you_know["start"] == words[3]["start"] and you_know["end"] == words[4]["end"]
    assert you_know["text"] == "you know,"
    hyphen = found[4]  # one Whisper word "you-know" holds the whole phrase
    assert hyphen["start"] == words[9]["start"] and hyphen["end"] == words[9]["end"]


def test_fillers_need_consecutive_words() -> None:
    words = make_words("you do know that sort of thing")
    assert [f["phrase"] for f in find_fillers(words, ("you know", "sort of"))] == ["sort of"]


def test_fillers_not_inside_other_words() -> None:
    words = make_words("umbrella uhuru likely human")
    assert find_fillers(words, ("um", "uh", "like")) == []


def test_longest_phrase_wins() -> None:
    words = make_words("I kind of like it")
    found = find_fillers(words, ("kind", "kind of", "like"))
    assert [f["phrase"] for f in found] == ["kind of", "like"]


# --------------------------------------------------------------------------- pauses


def test_pauses() -> None:
    words = make_words("a b c", start=0.0) + make_words("d e", start=3.0) + make_words("f", start=4.5)
    pauses = find_pauses(words, min_seconds=1.0)
    assert pauses == [{"start": 1.3, "end": 3.0, "duration": 1.7}]
    assert find_pauses(words, min_seconds=0.5) == [
        {"start": 1.3, "end": 3.0, "duration": 1.7},
        {"start": 3.8, "end": 4.5, "duration": 0.7},
    ]
    assert find_pauses(words[:1]) == []
    assert find_pauses([]) == []


def test_pauses_overlapping_timestamps() -> None:
    words = [
        {"word": "long", "start": 0.0, "end": 3.0},
        {"word": "x", "start": 1.0, "end": 1.2},  # overlaps: no negative or fake pause
        {"word": "y", "start": 3.5, "end": 3.8},
    ]
    assert find_pauses(words, 0.4) == [{"start": 3.0, "end": 3.5, "duration": 0.5}]


# --------------------------------------------------------------------------- audio


def test_pitch_of_220hz_sine() -> None:
    track = prosody_track(sine(220, 2.0))
    voiced = [p for p in track.pitch_hz if p is not None]
    assert len(voiced) >= 0.9 * len(track.pitch_hz)
    assert all(abs(p - 220) < 5 for p in voiced)
    assert track.pitch_median_hz == pytest.approx(220, abs=5)
    assert track.hop_seconds == 0.05 and len(track.t) == 40
    assert track.energy_db[5] == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.2)


@pytest.mark.parametrize("f0", [90.0, 130.0, 180.0, 260.0, 350.0])
def test_pitch_of_harmonic_voice_like_tone(f0: float) -> None:
    t = np.arange(RATE) / RATE
    x = sum((0.3 / k) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)).astype(np.float32)
    assert prosody_track(x).pitch_median_hz == pytest.approx(f0, rel=0.02)


def test_pitch_follows_a_change() -> None:
    track = prosody_track(np.concatenate([sine(150, 1.0), sine(250, 1.0)]))
    assert track.pitch_hz[5] == pytest.approx(150, abs=3)
    assert track.pitch_hz[30] == pytest.approx(250, abs=3)
    assert track.pitch_range_semitones == pytest.approx(12 * np.log2(250 / 150), abs=0.5)


def test_silence_and_noise_are_unvoiced() -> None:
    silent = prosody_track(np.zeros(RATE, np.float32))
    assert all(p is None for p in silent.pitch_hz)
    assert silent.pitch_median_hz is None and silent.voiced_fraction == 0.0
    assert set(silent.energy_db) == {-100.0}
    noise = prosody_track((np.random.default_rng(1).standard_normal(RATE) * 0.1).astype(np.float32))
    assert noise.voiced_fraction < 0.1


def test_energy_db() -> None:
    x = np.concatenate([np.zeros(800, np.float32), np.full(800, 0.5, np.float32)])
    db = frame_energy_db(x, RATE, 0.05)
    assert db.tolist() == pytest.approx([-100.0, 20 * np.log10(0.5)])
    assert frame_energy_db(np.zeros(10, np.float32)).size == 0


def test_prosody_fast_for_a_minute() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(60 * RATE) / RATE
    x = (0.3 * np.sin(2 * np.pi * (150 + 30 * np.sin(t)) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    prosody_track(x[:RATE])  # warm numpy's FFT plan cache
    # CPU time of this thread, not wall time: another process on the cores does not count.
    start = time.thread_time()
    track = prosody_track(x)
    cpu = time.thread_time() - start
    assert len(track.t) == 1200
    assert cpu < 1.0, f"pitch/energy of 60 s took {cpu:.2f} s of CPU"


# --------------------------------------------------------------------------- together


def test_compute_metrics_full() -> None:
    text = "Um so I think you know the answer is like a hash map " * 5
    words = make_words(text.strip(), start=1.0, step=0.4)
    audio = np.concatenate([np.zeros(RATE, np.float32), sine(180, 25.0)])
    m = compute_speech_metrics(words, audio, options=SpeechMetricsOptions(pace_window_seconds=5.0))
    assert m.has_speech and m.word_count == 65
    assert m.wpm == pytest.approx(65 / (64 * 0.4 + 0.3) * 60, abs=0.2)
    assert m.pace_band == "ok"  # ~151 wpm
    assert m.filler_counts == {"um": 5, "you know": 5, "like": 5}
    assert m.filler_count == 15
    assert m.pauses == [] and m.longest_pause_s is None
    assert m.duration_s == pytest.approx(26.0)
    assert m.prosody is not None and m.prosody.pitch_median_hz == pytest.approx(180, abs=3)
    assert m.pace_track and m.pace_track[0]["t"] == pytest.approx(6.0)
    assert isinstance(m.as_dict()["prosody"], dict)


def test_no_speech_gives_none_not_numbers() -> None:
    m = compute_speech_metrics([], np.zeros(5 * RATE, np.float32))
    assert m.has_speech is False
    assert m.wpm is None and m.pace_band is None and m.fillers_per_minute is None and m.speaking_s is None
    assert m.pace_track == [] and m.pauses == [] and m.fillers == []
    assert m.prosody is not None and m.prosody.pitch_median_hz is None
    assert m.duration_s == pytest.approx(5.0)
    assert compute_speech_metrics([]).prosody is None


def test_options_from_settings() -> None:
    s = Settings(pause_seconds=2.0, filler_words=("well",), pace_low_wpm=90.0)
    opts = SpeechMetricsOptions.from_settings(s)
    assert opts.pause_seconds == 2.0 and opts.filler_words == ("well",) and opts.pace_low_wpm == 90.0
    assert opts.pace_window_seconds == s.speech.pace_window_seconds and opts.pace_high_wpm == s.speech.pace_high_wpm
    words = make_words("well a b c well", step=1.5)
    m = compute_speech_metrics(words, options=opts)
    assert m.filler_counts == {"well": 2} and m.pauses == []


def test_text_helpers() -> None:
    assert normalize_tokens("Hello, World! It's  -- fine.") == ["hello", "world", "it's", "fine"]
    assert word_error_rate("a b c d", "a b c d") == 0.0
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "a") == 1.0 and word_error_rate("a b", "") == 1.0
    # Normalised first (case, punctuation, hyphens); substitutions + deletions + insertions / reference.
    assert word_error_rate("Mm-hmm, the CAT sat.", "mm hmm the cat sat") == 0.0
    assert word_error_rate("the cat sat on the mat", "the cat sat sat on mat now") == pytest.approx(3 / 6)


def test_app_side_speech_metrics_do_not_import_jiwer(tmp_path) -> None:
    """WER is an evaluation helper: the runtime speech metrics never load jiwer."""
    import subprocess
    import sys

    out = tmp_path / "out.txt"
    code = "import sys, pipeline.speech_metrics, pipeline.prosody; print('jiwer' in sys.modules)"
    with open(out, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT, timeout=120, check=True)
    assert out.read_text().strip() == "False"
