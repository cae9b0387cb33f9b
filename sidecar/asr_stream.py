"""Streaming transcription of one answer while the candidate speaks: cuts at silences (or hard cuts
in run-on speech), commits words on the answer clock, keeps audio until it is acknowledged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeline.records import SAMPLE_RATE
from pipeline.speech_metrics import frame_energy_db, normalize_tokens
from sidecar.asr_backlog import AudioBacklog, PendingAudio
from sidecar.asr_engine import AsrWord, StreamWord, Transcript
from sidecar.asr_weights import AsrError

if TYPE_CHECKING:
    from pipeline.settings_sections import AsrSettings


class Recognizer(Protocol):
    """What streaming needs of a recognizer (``sidecar.asr.SpeechRecognizer``, or a fake in tests)."""

    @property
    def options(self) -> AsrSettings: ...

    def transcribe(self, audio16k: np.ndarray, offset: float = 0.0, /, *,
                   first_window_only: bool = False) -> Transcript: ...


class StreamingTranscriber:
    """Incremental transcription of one answer.

    ``feed(chunk, t0_ms)`` appends audio; once ``chunk_seconds`` of untranscribed
    audio has accumulated, the part up to the longest silence in its second half is
    transcribed and its words are returned. With no silence (run-on speech) a hard cut
    is made at ``max_chunk_seconds``; then only words ending well before the cut are
    kept and the rest is transcribed again with the next part, so a word split by the
    cut is neither lost nor duplicated. ``finish()`` transcribes only the tail.

    Audio stays in memory until ``ack()``; ``pending_audio()`` returns it, and
    ``resume`` starts a new transcriber from it (from this one's buffer on a clean
    hand-over, or from the supervisor's own ``AudioBacklog`` after a crash).
    """

    frame_seconds = 0.02
    min_silence_seconds = 0.25
    hard_cut_guard_seconds = 0.4
    # Whisper decodes the end of a part worse without what follows ("ask not" heard as "asked not"
    # when the part stops at the pause after it): decode up to this much beyond a soft cut, commit
    # only the words before it, and hear the rest again with the next part.
    lookahead_seconds = 2.0
    min_progress_seconds = 0.5  # a part moves the cursor at least this far
    resume_chunk_seconds = 8.0  # the longest parts of a resumed answer (see ``resume``)

    def __init__(
        self,
        recognizer: Recognizer,
        options: AsrSettings | None = None,
        *,
        max_chunk_seconds: float | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.options = options or recognizer.options
        self.rate = SAMPLE_RATE
        self.chunk_samples = int(self.options.chunk_seconds * self.rate)
        # Whisper sees 30 s windows; stay below so one chunk is one decoding window.
        max_s = max_chunk_seconds or min(2.0 * self.options.chunk_seconds, 25.0)
        self.max_chunk_samples = max(self.chunk_samples, int(max_s * self.rate))
        self.max_window_samples = max(self.max_chunk_samples, 28 * self.rate)  # part + right context
        self.audio = AudioBacklog(self.rate)
        self._cursor = 0  # everything before this is transcribed and committed
        self.words: list[StreamWord] = []
        self.texts: list[str] = []
        self.language: str | None = None
        self.chunk_log: list[dict[str, float]] = []  # one entry per transcribed part
        self.finished = False

    @property
    def answer_t0_ms(self) -> int | None:
        return self.audio.answer_t0_ms

    # ---- supervisor hand-over

    @classmethod
    def resume(
        cls, recognizer: Recognizer, pending: PendingAudio, options: AsrSettings | None = None
    ) -> StreamingTranscriber:
        """A fresh transcriber that carries on from another worker's unacknowledged audio.

        It starts where the last stored word ended, often mid-sentence, with a long backlog, and
        Whisper skips the mid-sentence head of a long part (after a resume with 16 s parts, 11 s of
        a 24 s part were lost): the rest of the answer goes in parts of at most ``resume_chunk_seconds``.
        """
        options = options or recognizer.options
        if options.chunk_seconds > cls.resume_chunk_seconds:
            options = options.model_copy(update={"chunk_seconds": cls.resume_chunk_seconds})
        st = cls(recognizer, options)
        st.audio = AudioBacklog.from_pending(pending)
        st._cursor = pending.start_sample
        return st

    def pending_audio(self) -> PendingAudio:
        return self.audio.pending()

    def ack(self, upto_ms: float | None = None) -> None:
        """The caller has stored the words up to ``upto_ms`` (default: all returned so far)."""
        if self.answer_t0_ms is None:
            return
        target = self._cursor if upto_ms is None else min(self._cursor, self.audio.sample_at_ms(upto_ms))
        self.audio.ack_sample(target)

    @property
    def committed_until_ms(self) -> float | None:
        """Epoch ms up to which words are final; ``ack(this)`` after storing them."""
        return None if self.answer_t0_ms is None else self.time_ms(self._cursor)

    def time_ms(self, sample: int) -> float:
        return self.audio.time_ms(sample)

    def feed(self, chunk: np.ndarray, t0_ms: int) -> list[StreamWord]:
        """Append 16 kHz mono float32 audio whose first sample was captured at ``t0_ms``.

        Returns the words committed by this call (often none).
        """
        if self.finished:
            raise AsrError("feed() after finish(): start a new StreamingTranscriber for the next answer")
        self.audio.append(chunk, t0_ms)
        new: list[StreamWord] = []
        while self.audio.end - self._cursor >= self.chunk_samples:
            cut = self._find_cut()
            if cut is None:
                break
            new.extend(self._transcribe_part(*cut))
        return new

    def _find_cut(self) -> tuple[int, bool] | None:
        """(absolute cut sample, is_hard_cut) or None to wait for more audio."""
        region = self.audio.slice(self._cursor, self.audio.end)
        n = len(region)
        hop = int(self.frame_seconds * self.rate)
        db = frame_energy_db(region, self.rate, self.frame_seconds)
        if db.size == 0:
            return None
        peak = float(np.percentile(db, 95))
        floor = float(np.percentile(db, 10))
        threshold = min(peak - 20.0, max(floor + 8.0, -55.0))
        quiet = (db < threshold) | (db < -55.0)  # -55 dBFS: quiet in absolute terms (all-silent parts)
        lo = int(0.5 * self.chunk_samples) // hop  # leave a useful amount of speech in the part
        edges = np.diff(np.concatenate(([0], quiet[lo:].astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if starts.size:
            lengths = ends - starts
            i = len(lengths) - 1 - int(np.argmax(lengths[::-1]))  # the longest; the later of equals
            if lengths[i] * self.frame_seconds >= self.min_silence_seconds:
                return self._cursor + (lo + int(starts[i]) + int(lengths[i]) // 2) * hop, False
        if n >= self.max_chunk_samples:
            # No silence anywhere: cut at the quietest frame of the second half.
            half = len(db) // 2
            k = half + int(np.argmin(db[half:]))
            return self._cursor + k * hop + hop // 2, True
        return None

    def _transcribe_part(self, cut: int, hard: bool, final: bool = False) -> list[StreamWord]:
        """Transcribe from the cursor on, commit the words before ``cut`` and move the cursor.

        Whisper also hears the audio already buffered after the cut (right context: alone,
        "ask not" at the end of a part came out "asked not..."); those words are dropped
        here and heard again, whole, with the next part. The cursor stops short of ``cut``
        when the end of the part must be heard again: after a hard cut (a word may be
        split) and when Whisper stopped early, leaving speech after its last word.
        """
        start = self._cursor
        stop = cut if final else min(self.audio.end, start + self.max_window_samples)
        t0 = time.perf_counter()
        heard = self.audio.slice(start, stop)
        # A part is one encoder pass: what Whisper's first window leaves undecoded is heard again with
        # the next part (which has to decode it anyway), not in a pass of its own. At the end of an
        # answer that pass was often a tenth of a second after the last word, where Whisper (base, with
        # the filler prompt) invents "uh, uh, uh, ..." up to its token limit: 10-20 s of decoding.
        result = self.recognizer.transcribe(heard, 0.0, first_window_only=self.options.one_window_parts)
        if result.stopped_at is not None and result.stopped_at < self.min_progress_seconds:
            result = self.recognizer.transcribe(heard, 0.0)  # too little decoded to move on from
        elapsed = time.perf_counter() - t0
        self.language = self.language or result.language
        audio = self.audio.slice(start, cut)
        part_s = (cut - start) / self.rate
        heard_s = (stop - start) / self.rate if result.stopped_at is None else result.stopped_at
        words = result.words
        next_cursor = cut
        if hard and not final and words:
            # Commit only up to the cut: words near the end of what Whisper heard get the worst
            # timestamps and spellings, the ones before the cut had right context.
            keep, resume_s = _hard_cut_resume(result, part_s - self.hard_cut_guard_seconds, heard_s)
            words = words[:keep]
            next_cursor = start + int(resume_s * self.rate)
        elif not final:
            words = [w for w in words if (w["start"] + w["end"]) / 2 < part_s]  # the cut lies in a silence
        if words and start > 0:
            words = self._recover_head(audio, words)
        unheard = None if result.stopped_at is None else start + int(result.stopped_at * self.rate)
        if unheard is not None and unheard < next_cursor and (not final or cut - unheard >= self.rate):
            next_cursor = unheard  # Whisper's window ended here: the rest is heard with the next part
        elif words and next_cursor == cut:  # under a second left after the last word: heard again only if speech
            skipped = _skipped_speech_start(audio, words[-1]["end"], self.rate)
            if skipped is not None:
                next_cursor = start + int(skipped * self.rate)
        if next_cursor < start + int(self.min_progress_seconds * self.rate):
            next_cursor = cut  # always advance: re-hearing the same audio forever is worse than a lost word
        committed = self._commit(words, start)
        self.chunk_log.append(
            {
                "start_s": round(start / self.rate, 3),
                "end_s": round(cut / self.rate, 3),
                "heard_s": round(stop / self.rate, 3),
                "next_s": round(next_cursor / self.rate, 3),
                "stopped_s": -1.0 if result.stopped_at is None else round(start / self.rate + result.stopped_at, 3),
                "elapsed_s": round(elapsed, 3),
                "words": float(len(committed)),
                "hard": float(hard),
                "final": float(final),
            }
        )
        self._cursor = next_cursor
        return committed

    def _recover_head(self, audio: np.ndarray, words: list[AsrWord], depth: int = 0) -> list[AsrWord]:
        """Whisper often skips a sentence fragment at the start of a part; transcribe it alone.

        The head alone still starts mid-sentence, and Whisper may skip its start again (a long part
        after a worker restart began in mid-sentence: 22 s heard, 11 s of them skipped twice), so
        the head's own head is recovered too, a few levels deep."""
        head_end = words[0]["start"]
        if head_end < 0.5 or _speech_seconds(audio[: int(head_end * self.rate)], self.rate) < 0.3:
            return words
        head = self.recognizer.transcribe(audio[: int(head_end * self.rate)], 0.0)
        found = [w for w in head.words if w["end"] <= head_end + 0.1]
        if found and depth < 2:
            found = self._recover_head(audio, found, depth + 1)
        return found + words

    def _commit(self, words: list[AsrWord], start: int) -> list[StreamWord]:
        """Map part-relative words to the answer clock and append them, skipping repeats."""
        committed: list[StreamWord] = []
        t0_ms = self.answer_t0_ms
        assert t0_ms is not None  # words exist only once audio (and so its clock) has arrived
        last = self.words[-1] if self.words else None
        last_end_ms = last["end_ms"] if last else -np.inf
        recent = self.words[-3:]
        head = True  # still inside the overlap with the previous part
        for w in words:
            s_ms = self.time_ms(start + int(round(w["start"] * self.rate)))
            e_ms = self.time_ms(start + int(round(w["end"] * self.rate)))
            mid = (s_ms + e_ms) / 2
            if head and any(
                _same_word(w["word"], c["word"]) and abs(mid - (c["t_ms"] + c["end_ms"]) / 2) < 300 for c in recent
            ):
                continue  # the previous part's last word heard again at the start of this one
            if e_ms <= last_end_ms + 50:
                continue  # lies inside committed speech
            head = False  # "I I think" later in the part is a real repetition and stays
            s_ms = max(s_ms, last_end_ms)  # timestamps of two decodings may overlap a little
            word: StreamWord = {
                "word": w["word"],
                "start": round((s_ms - t0_ms) / 1000.0, 3),
                "end": round((e_ms - t0_ms) / 1000.0, 3),
                "probability": w["probability"],
                "t_ms": int(round(s_ms)),
                "end_ms": int(round(e_ms)),
            }
            committed.append(word)
            last, last_end_ms = word, e_ms
        if committed:
            self.texts.append(" ".join(w["word"] for w in committed))
        self.words.extend(committed)
        return committed

    def finish(self) -> Transcript:
        """Transcribe the untranscribed tail and return the whole answer's transcript."""
        t0 = time.perf_counter()
        for _ in range(4):  # the tail, plus any speech Whisper skipped at its end
            if self.finished or self.audio.end - self._cursor < self.rate // 10:
                break
            before = self._cursor
            self._transcribe_part(self.audio.end, hard=False, final=True)
            if self._cursor <= before:
                break
        self._cursor = self.audio.end
        self.finished = True
        duration = 0.0 if self.answer_t0_ms is None else (self.time_ms(self.audio.end) - self.answer_t0_ms) / 1000.0
        return Transcript(
            words=list(self.words),
            text=" ".join(self.texts),
            language=self.language or self.options.language,
            duration=round(duration, 3),
            engine=self.options.engine,
            model=self.options.model,
            elapsed_s=round(time.perf_counter() - t0, 3),
        )


def _same_word(a: str, b: str) -> bool:
    return normalize_tokens(a) == normalize_tokens(b)


def _speech_regions(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[dict[str, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions: list[dict[str, int]] = get_speech_timestamps(
        audio, VadOptions(min_silence_duration_ms=300, speech_pad_ms=100), rate
    )
    return regions


def _speech_seconds(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    if len(audio) < rate // 4:
        return 0.0
    return sum(r["end"] - r["start"] for r in _speech_regions(audio, rate)) / rate


def _skipped_speech_start(audio: np.ndarray, last_end: float, rate: int = SAMPLE_RATE) -> float | None:
    """Seconds into ``audio`` where speech resumes after ``last_end`` with no words, else None.

    Only speech totalling at least 0.4 s counts, so the trailing half of a word
    whose end Whisper placed early does not trigger a re-transcription.
    """
    tail = audio[int(last_end * rate) :]
    if len(tail) < rate // 2:
        return None
    regions = [r for r in _speech_regions(tail, rate) if r["start"] >= int(0.15 * rate)]  # not the end of the last word
    if sum(r["end"] - r["start"] for r in regions) < int(0.4 * rate):
        return None
    return last_end + max(0.0, regions[0]["start"] / rate - 0.2)


def _hard_cut_resume(result: Transcript, safe_end: float, heard_s: float) -> tuple[int, float]:
    """After a cut inside speech: how many words to keep and where to start the next part.

    Whisper garbles a word cut in half and, given audio that starts mid-sentence,
    often skips the whole fragment. So the next part preferably starts after the last
    sentence end (a segment end or ., ?, !) before ``safe_end``; else in the longest
    pause between words there; else after the last word that ends before it.
    """
    words = result.words
    eligible = [i for i in range(len(words)) if words[i]["end"] <= safe_end]
    if not eligible:
        return 0, max(0.0, words[0]["start"] - 0.1)
    seg_ends, count = set(), 0
    for seg in result.segments:
        count += seg["n_words"]
        seg_ends.add(count - 1)
    sentence = [i for i in eligible if i in seg_ends or words[i]["word"].rstrip("\"')").endswith((".", "?", "!"))]

    def gap(i: int) -> float:  # silence after word i (the last one: up to the end of the audio)
        return (words[i + 1]["start"] if i + 1 < len(words) else heard_s) - words[i]["end"]

    if sentence:
        i = sentence[-1]
    else:
        i = max(eligible, key=lambda k: (round(gap(k), 2), k))  # the longest pause; the later of equals
        if gap(i) < 0.1:
            i = eligible[-1]
    resume = words[i]["end"] + max(0.0, gap(i)) / 2  # the middle of the pause after it
    return i + 1, resume
