"""Speech benchmark: real-time factor per engine/model, streaming tail latency, metrics cost.

    .venv/bin/python bench/bench_asr.py [--repeats 3] [--threads 2] [--cache DIR] [--skip-openai]

Prints markdown tables. RTF = processing seconds / audio seconds (below 1 = faster than
real time). Timings are medians (and best) over ``--repeats`` runs after a warm-up run; on a
shared machine the best run is the closest to an idle CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.evaluate import word_error_rate  # noqa: E402
from pipeline.media import load_audio  # noqa: E402
from pipeline.records import SAMPLE_RATE  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.speech_metrics import SpeechMetricsOptions, compute_speech_metrics  # noqa: E402
from sidecar.asr import AsrSettings, SpeechRecognizer, StreamingTranscriber  # noqa: E402

SPEECH = ROOT.parent / "shared" / "data" / "speech"
RATE = SAMPLE_RATE
JFK_REF = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LEFT_REF = "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
RIGHT_REF = "The horizon seems extremely distant."
HOT_REF = "Then you go into your ComfyUI folder again in the ComfyUI"


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def answer_60s() -> tuple[np.ndarray, str]:
    jfk = load_audio(SPEECH / "jfk.flac")
    left = load_audio(SPEECH / "stereo_diarization.wav", channel=0)
    right = load_audio(SPEECH / "stereo_diarization.wav", channel=1)
    hot = load_audio(SPEECH / "hotwords.mp3")
    parts = [(jfk, JFK_REF), (left, LEFT_REF), (right, RIGHT_REF), (hot, HOT_REF)] * 2 + [(jfk, JFK_REF)]
    audio = np.concatenate([p for p, _ in parts])[: 60 * RATE]
    return audio, " ".join(r for _, r in parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="joined/converted weights (default ~/.cache/mockai/asr)")
    ap.add_argument("--skip-openai", action="store_true")
    args = ap.parse_args()

    jfk = load_audio(SPEECH / "jfk.flac")
    jfk_s = len(jfk) / RATE
    configs = [("faster-whisper", "tiny.en"), ("faster-whisper", "base")]
    if not args.skip_openai:
        configs += [("openai-whisper", "tiny.en"), ("openai-whisper", "base")]

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# ASR benchmark ({platform.machine()}, {os.cpu_count()} cores, load average {load}; {args.threads} threads, "
          f"{args.repeats} runs each, median)\n")
    recognizers: dict[tuple[str, str], SpeechRecognizer] = {}
    setup: dict[tuple[str, str], float] = {}
    for engine, model in configs:
        rec = SpeechRecognizer(AsrSettings(engine=engine, model=model, threads=args.threads, cache_dir=args.cache))
        t0 = time.perf_counter()
        rec.warm_up()
        setup[(engine, model)] = time.perf_counter() - t0
        recognizers[(engine, model)] = rec
    # Interleaved rounds: a burst of load from other processes hits every engine alike.
    times: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    texts: dict[tuple[str, str], str] = {}
    for _ in range(args.repeats):
        for config in configs:
            t0 = time.perf_counter()
            texts[config] = recognizers[config].transcribe(jfk).text
            times[config].append(time.perf_counter() - t0)
    print(f"## One-shot transcription of jfk.flac ({jfk_s:.0f} s)\n")
    print("| engine | model | weights | first load + warm-up (s) | transcribe, median (s) | best (s) | RTF (median) "
          "| RTF (best) | x fw tiny.en (median) | WER |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ref_median = statistics.median(times[configs[0]])
    for config in configs:
        engine, model = config
        med, best = statistics.median(times[config]), min(times[config])
        ctype = recognizers[config].options.compute_type if engine == "faster-whisper" else "float32"
        print(f"| {engine} | {model} | {ctype} | {setup[config]:.2f} | {med:.2f} | {best:.2f} | {med / jfk_s:.3f} | "
              f"{best / jfk_s:.3f} | {med / ref_median:.1f} | {word_error_rate(JFK_REF, texts[config]):.3f} |")

    # ---- streaming: a 60 s answer fed in 20 ms frames; chunks are transcribed while "speaking".
    audio, ref = answer_60s()
    print(f"\n## Streaming a {len(audio) / RATE:.0f} s answer (chunk_seconds={Settings().asr.chunk_seconds:g})\n")
    print("| engine | model | one-shot of 60 s (s) | parts during speech | worst part (s) | busy while speaking (% of 60 s) "
          "| tail latency: finish() (s) | tail vs one-shot | WER stream | WER one-shot |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    stream_words = None
    for engine, model in [("faster-whisper", "tiny.en"), ("faster-whisper", "base")]:
        rec = recognizers[(engine, model)]
        one_s, one = median_time(lambda rec=rec: rec.transcribe(audio), min(3, args.repeats))
        tails, busies, worsts, parts, final = [], [], [], 0, None
        for _ in range(args.repeats):
            st = StreamingTranscriber(rec)
            t0 = time.perf_counter()
            for i in range(0, len(audio), 320):
                st.feed(audio[i : i + 320], 1_700_000_000_000 + i // 16)
            busies.append(time.perf_counter() - t0)
            parts = len(st.chunk_log)
            worsts.append(max((c["elapsed_s"] for c in st.chunk_log), default=0.0))
            t1 = time.perf_counter()
            final = st.finish()
            tails.append(time.perf_counter() - t1)
        tail = statistics.median(tails)
        if model == "tiny.en":
            stream_words = final.words
        print(f"| {engine} | {model} | {one_s:.2f} | {parts} | {statistics.median(worsts):.2f} | "
              f"{100 * statistics.median(busies) / 60:.0f}% | {tail:.2f} | {tail / one_s:.2f} | "
              f"{word_error_rate(ref, final.text):.3f} | {word_error_rate(ref, one.text):.3f} |")

    live_parts(recognizers[("faster-whisper", "tiny.en")], audio, ref, args.repeats)

    # ---- delivery metrics on the streamed 60 s answer
    opts = SpeechMetricsOptions.from_settings(Settings())
    m_s, metrics = median_time(lambda: compute_speech_metrics(stream_words, audio, options=opts), max(3, args.repeats))
    w_s, _ = median_time(lambda: compute_speech_metrics(stream_words, options=opts), max(3, args.repeats))
    print("\n## speech_metrics on the 60 s answer\n")
    print("| what | time (ms) | result |")
    print("|---|---:|---|")
    print(f"| words only (wpm, pace track, fillers, pauses) | {1000 * w_s:.1f} | {metrics.word_count} words, "
          f"{metrics.wpm} wpm ({metrics.pace_band}), {len(metrics.pace_track)} pace points, "
          f"{metrics.filler_count} fillers, {len(metrics.pauses)} pauses |")
    p = metrics.prosody
    print(f"| + pitch/energy track (50 ms hops, YIN) | {1000 * m_s:.1f} | {len(p.t)} frames, voiced "
          f"{100 * p.voiced_fraction:.0f}%, median pitch {p.pitch_median_hz} Hz |")


def live_parts(rec: SpeechRecognizer, audio: np.ndarray, ref: str, rounds: int) -> None:
    """The speech worker's CPU over a live answer: part length x one encoder pass a part, side by side.

    Whisper's encoder runs on a whole 30 s window however short the part, so the number of passes
    sets the cost; "every window" is how parts were decoded before (faster-whisper encodes again
    from the last word when a window ends early)."""
    configs = [(8.0, False), (8.0, True), (16.0, False), (16.0, True), (24.0, True)]
    default = Settings().asr.chunk_seconds
    cpu: dict[tuple[int, float, bool], list[float]] = {}
    tail: dict[tuple[int, float, bool], list[float]] = {}
    info: dict[tuple[int, float, bool], tuple[int, int, float]] = {}
    for _ in range(max(2, min(rounds, 3))):  # interleaved rounds: load from other processes hits all alike
        for secs in (20, 60):
            part = audio[: secs * RATE]
            for chunk, one_window in configs:
                st = StreamingTranscriber(rec, rec.options.model_copy(
                    update={"chunk_seconds": chunk, "one_window_parts": one_window}))
                c0 = time.process_time()
                for i in range(0, len(part), RATE // 2):  # 0.5 s chunks, as the capture sends them
                    st.feed(part[i : i + RATE // 2], 1_700_000_000_000 + i // 16)
                w1 = time.perf_counter()
                final = st.finish()
                key = (secs, chunk, one_window)
                tail.setdefault(key, []).append(time.perf_counter() - w1)
                cpu.setdefault(key, []).append(time.process_time() - c0)
                info[key] = (len(st.chunk_log), len(final.words), word_error_rate(ref, final.text) if secs == 60 else -1.0)
    print(f"\n## Live parts: speech-worker CPU over an answer ({rec.options.threads} threads, median of "
          f"{len(next(iter(cpu.values())))} interleaved rounds; default chunk_seconds = {default:g})\n")
    print("| answer | part length (s) | decoding | parts | CPU (s) | cores over the answer | x before | "
          "finish() wall (s) | words | WER |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for secs in (20, 60):
        before = statistics.median(cpu[(secs, 8.0, False)])
        for chunk, one_window in configs:
            key = (secs, chunk, one_window)
            med = statistics.median(cpu[key])
            parts, words, wer = info[key]
            label = "one window a part" if one_window else "every window (before)"
            print(f"| {secs} s | {chunk:g} | {label} | {parts} | {med:.2f} | {med / secs:.3f} | {med / before:.2f} | "
                  f"{statistics.median(tail[key]):.2f} | {words} | {f'{wer:.3f}' if wer >= 0 else '—'} |")


if __name__ == "__main__":
    main()
