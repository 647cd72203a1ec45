"""Baseline for `streamstt bench --baseline`: streaming with faster-whisper the way
whisper_streaming (Macháček et al., 2023, "Turning Whisper into Real-Time Transcription
System") does it, in process, on the same tiny.en weights.

The loop (one per stream, each in its own thread, sharing one model):
  * audio accumulates in a buffer that starts at the last trim point;
  * whenever `min_chunk_s` of new audio has arrived (or the audio ended), the whole buffer is
    transcribed with word_timestamps=True, conditioned on committed text that has already
    scrolled out of the buffer (its last 200 characters) as initial_prompt;
  * LocalAgreement-2: the words on which this hypothesis and the previous one agree (their
    longest common prefix after the last committed word) are committed, i.e. output;
  * when the buffer exceeds `trim_s`, it is cut at the end of the last committed word;
  * at the end of the audio, one last pass runs and the uncommitted rest is output.

Differences from whisper_streaming, on purpose: beam_size=1 (greedy, like the streamstt
server's interim decoding; whisper_streaming defaults to 5), words are compared after
normalisation (lower case, no punctuation; whisper_streaming compares raw strings, which only
commits later), and trimming is at committed words rather than at segment ends.

faster-whisper is a benchmark/test dependency only: it is imported where it is used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import latency

SAMPLE_RATE = 16000
NO_SPEECH_SKIP = 0.9  # segments above this no-speech probability give no words (as upstream)


@dataclass(frozen=True)
class BaselineConfig:
    min_chunk_s: float = 1.0  # new audio between passes (whisper_streaming's --min-chunk-size)
    trim_s: float = 15.0  # buffer length that triggers trimming (--buffer_trimming_sec)
    beam_size: int = 1
    prompt_chars: int = 200  # committed text given as initial_prompt
    threads: int = 0  # CTranslate2 intra-op threads (0 = its default)
    compute_type: str = "int8"
    language: str = "en"


@dataclass(frozen=True)
class TimedWord:
    start: float
    end: float
    text: str


def describe(config: BaselineConfig) -> dict:
    import faster_whisper

    from streamstt.models.loading import bundled_model_dir

    return {
        "engine": f"faster-whisper {faster_whisper.__version__}",
        "model": str(bundled_model_dir()),
        "policy": "LocalAgreement-2 (whisper_streaming)",
        **asdict(config),
    }


def load_model(config: BaselineConfig):
    from faster_whisper import WhisperModel

    from streamstt.models.loading import bundled_model_dir

    return WhisperModel(
        str(bundled_model_dir()),
        device="cpu",
        compute_type=config.compute_type,
        cpu_threads=config.threads,
    )


def load_audio(path: str | Path, audio_s: float | None = None) -> np.ndarray:
    """16 kHz mono float32, cut to `audio_s` seconds (what the streamstt streams get)."""
    from streamstt.models.audio import decode_audio

    samples = decode_audio(path).numpy().astype(np.float32)
    return samples if audio_s is None else samples[: int(round(audio_s * SAMPLE_RATE))]


def _key(text: str) -> str:
    return latency.normalise(text)


class LocalAgreement:
    """whisper_streaming's HypothesisBuffer: commits the prefix two consecutive hypotheses
    share, after the last committed word."""

    def __init__(self) -> None:
        self.committed_in_buffer: list[TimedWord] = []
        self.previous: list[TimedWord] = []  # last hypothesis, minus what it committed
        self.new: list[TimedWord] = []
        self.last_committed_time = 0.0

    def insert(self, words: list[TimedWord]) -> None:
        # Only words after the last committed one (0.1 s slack for jittery word times).
        self.new = [w for w in words if w.start > self.last_committed_time - 0.1]
        if self.new and abs(self.new[0].start - self.last_committed_time) < 1:
            # The model often repeats the last 1-5 committed words at the start: drop them.
            for n in range(1, min(len(self.committed_in_buffer), len(self.new), 5) + 1):
                tail = [_key(w.text) for w in self.committed_in_buffer[-n:]]
                head = [_key(w.text) for w in self.new[:n]]
                if tail == head:
                    del self.new[:n]
                    break

    def flush(self) -> list[TimedWord]:
        commit = []
        while self.new and self.previous and _key(self.new[0].text) == _key(self.previous[0].text):
            word = self.new.pop(0)
            self.previous.pop(0)
            commit.append(word)
            self.last_committed_time = word.end
        self.previous, self.new = self.new, []
        self.committed_in_buffer += commit
        return commit

    def pop_committed(self, time_s: float) -> None:
        while self.committed_in_buffer and self.committed_in_buffer[0].end <= time_s:
            self.committed_in_buffer.pop(0)

    def uncommitted(self) -> list[TimedWord]:
        return list(self.previous)


class OnlineProcessor:
    """whisper_streaming's OnlineASRProcessor with the faster-whisper backend."""

    def __init__(self, model, config: BaselineConfig) -> None:
        self.model, self.config = model, config
        self.audio = np.zeros(0, dtype=np.float32)
        self.offset = 0.0  # stream time of the buffer's first sample
        self.agreement = LocalAgreement()
        self.committed: list[TimedWord] = []

    def insert_audio(self, samples: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, samples])

    def prompt(self) -> str:
        """Committed words that already left the buffer, last `prompt_chars` characters."""
        outside = [w.text for w in self.committed if w.end <= self.offset]
        picked: list[str] = []
        length = 0
        while outside and length < self.config.prompt_chars:
            word = outside.pop()
            length += len(word) + 1
            picked.append(word)
        return " ".join(reversed(picked))

    def transcribe(self) -> list[TimedWord]:
        segments, _ = self.model.transcribe(
            self.audio,
            language=self.config.language,
            initial_prompt=self.prompt() or None,
            beam_size=self.config.beam_size,
            word_timestamps=True,
            condition_on_previous_text=True,
            vad_filter=False,
        )
        words = []
        for segment in segments:  # a generator: decoding happens while iterating
            if segment.no_speech_prob > NO_SPEECH_SKIP:
                continue
            for w in segment.words or []:
                text = w.word.strip()
                if text:
                    words.append(TimedWord(self.offset + w.start, self.offset + w.end, text))
        return words

    def process_iter(self) -> list[TimedWord]:
        self.agreement.insert(self.transcribe())
        commit = self.agreement.flush()
        self.committed += commit
        if len(self.audio) / SAMPLE_RATE > self.config.trim_s and self.committed:
            self.trim_at(self.committed[-1].end)
        return commit

    def trim_at(self, time_s: float) -> None:
        self.agreement.pop_committed(time_s)
        cut = int(round((time_s - self.offset) * SAMPLE_RATE))
        if cut > 0:
            self.audio = self.audio[cut:]
            self.offset = time_s

    def finish(self) -> list[TimedWord]:
        rest = self.agreement.uncommitted()
        self.committed += rest
        return rest


def _words(words: list[TimedWord]) -> tuple[latency.Word, ...]:
    return tuple(latency.Word(w.text, w.start, w.end) for w in words)


def run_stream(
    model,
    audio: np.ndarray,
    config: BaselineConfig,
    *,
    chunk_s: float,
    pace: float,
    start_at: float,
    on_audio: Callable[[float], None] = lambda seconds: None,
) -> latency.StreamTimeline:
    """Feed `audio` in `chunk_s` chunks at `pace` and record the timeline in the harness's
    format: chunk k "is sent" at start + k * chunk_s / pace (when a live source would have
    delivered it, whether or not the loop is busy); every pass is a response with one
    word-less interim result (its end = audio covered, for the partial lag) and, when it
    committed words, one final result holding them."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    frames = max(1, int(round(chunk_s * SAMPLE_RATE)))
    bounds = [(i, min(i + frames, len(audio))) for i in range(0, len(audio), frames)]
    ends = [b / SAMPLE_RATE for _, b in bounds]
    origin = time.monotonic()
    due = [origin + k * chunk_s / pace for k in range(len(bounds))]
    processor = OnlineProcessor(model, config)
    chunks: list[latency.ChunkSend] = []
    responses: list[latency.Response] = []
    taken, covered, utterance = 0, 0.0, 0
    error, detail = None, ""
    try:
        while taken < len(bounds):
            want = min(covered + config.min_chunk_s, ends[-1])
            need = next(k for k, end in enumerate(ends) if end >= want - 1e-9)
            time.sleep(max(0.0, due[need] - time.monotonic()))
            now = time.monotonic()
            while taken < len(bounds) and due[taken] <= now:
                begin, end = bounds[taken]
                processor.insert_audio(audio[begin:end])
                chunks.append(latency.ChunkSend(due[taken], ends[taken]))
                on_audio(ends[taken] - (ends[taken - 1] if taken else 0.0))
                taken += 1
            covered = ends[taken - 1]
            commit = processor.process_iter()
            results = [latency.Result(False, utterance, covered)]
            if commit:
                results.append(latency.Result(True, utterance, commit[-1].end, _words(commit)))
                utterance += 1
            responses.append(latency.Response(time.monotonic(), tuple(results)))
        rest = processor.finish()
        if rest:
            final = latency.Result(True, utterance, rest[-1].end, _words(rest))
            responses.append(latency.Response(time.monotonic(), (final,)))
    except Exception as exc:  # noqa: BLE001 - recorded as this stream's error, like a status
        error, detail = type(exc).__name__, str(exc)
    audio_s = ends[-1] if ends else 0.0
    return latency.StreamTimeline(tuple(chunks), tuple(responses), audio_s, error, detail)


def run_level(
    model,
    audios: list[np.ndarray],
    config: BaselineConfig,
    *,
    chunk_s: float,
    pace: float,
    stagger_s: float = 0.0,
    on_audio: Callable[[float], None] = lambda seconds: None,
) -> list[latency.StreamTimeline]:
    """N streams as N threads sharing one model (CTranslate2 runs one call at a time on it with
    `threads` threads, the same compute the server gets)."""
    origin = time.monotonic()
    timelines: list[latency.StreamTimeline | None] = [None] * len(audios)

    def work(index: int) -> None:
        timelines[index] = run_stream(
            model,
            audios[index],
            config,
            chunk_s=chunk_s,
            pace=pace,
            start_at=origin + index * stagger_s,
            on_audio=on_audio,
        )

    threads = [
        threading.Thread(target=work, args=(i,), name=f"baseline-{i}") for i in range(len(audios))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [t for t in timelines if t is not None]
