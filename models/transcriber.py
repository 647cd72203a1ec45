"""High-level recognition: audio windows in, segments and words with times out.

`Transcriber.transcribe_batch` is what the streaming engine calls (many streams, one model
call); `Transcriber.transcribe` handles a whole file of any length, window by window.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from . import loading
from .alignment import Word, align_batch
from .audio import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    TOKENS_PER_SECOND,
    context_frames_for,
    window_features,
)
from .decoding import DecodedSequence, DecodingOptions, LogitRules, greedy_decode
from .precision import PrecisionPlan, apply_precision, batch_invariant, choose_precision


@dataclass(frozen=True)
class TranscribeOptions:
    full_window: bool = False  # pad every window to 30 s (True) or use a shorter context
    # The shorter context (full_window=False): at least this many seconds of encoder input,
    # and at least `context_margin_s` of padding after the audio. Chosen by measurement.
    min_context_s: float = 15.0
    context_margin_s: float = 5.0
    word_timestamps: bool = True  # align words with the cross-attention heads
    decoding: DecodingOptions = DecodingOptions()
    # Silence guard (Whisper's rule): a window whose <|nospeech|> probability is above this
    # and whose average token log-probability is below `logprob_threshold` yields no text.
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    # Text whose zlib compression ratio is above this is a degenerate loop; it is dropped.
    compression_ratio_threshold: float = 2.4
    # Decode every item exactly as it would be decoded alone (row-by-row int8 kernels on CPU,
    # a little slower): a final must not depend on which other streams share its batch.
    batch_invariant: bool = False


@dataclass(frozen=True)
class PreparedBatch:
    mel: Tensor  # (batch, n_mels, frames) on the model's device (or being copied there)
    frames: Tensor  # mel frames per item, audio + context padding (CPU)
    audio_positions: Tensor  # encoder positions that hold real audio, per item
    ready: torch.cuda.Event | None  # CUDA: set when the host-to-device copy has finished
    copy_started: torch.cuda.Event | None = None  # CUDA: when the copy began (profiling)


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: tuple[int, ...]


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    words: list[Word]
    tokens: list[int]  # sampled tokens of every window, timestamps included
    no_speech_prob: float
    avg_logprob: float
    confidence: float  # mean token probability of the text
    repetition_loop: bool = False
    dropped: str = ""  # why text was suppressed by a guard ("" = kept)
    timings: dict[str, float] = field(default_factory=dict)
    # the text tokens (no specials) and their probabilities, for word alignment
    text_tokens: list[int] = field(default_factory=list, repr=False)
    token_probs: list[float] = field(default_factory=list, repr=False)


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / max(1, len(zlib.compress(raw)))


class Transcriber:
    """A loaded model with its precision applied; thread-compatible (one call at a time)."""

    def __init__(self, loaded: loading.LoadedModel, plan: PrecisionPlan) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.plan = plan
        self.device = torch.device(plan.device)
        self._rules: dict[DecodingOptions, LogitRules] = {}
        self._stream: torch.cuda.Stream | None = None

    @classmethod
    def load(
        cls, model: str | Path | None = None, device: str = "auto", precision: str = "auto"
    ) -> Transcriber:
        loaded = loading.load(model)
        plan = choose_precision(loaded.model, device, precision)
        apply_precision(loaded.model, plan)
        return cls(loaded, plan)

    @property
    def name(self) -> str:
        return self.loaded.files.name

    def rules(self, options: DecodingOptions) -> LogitRules:
        if options not in self._rules:
            self._rules[options] = LogitRules(
                self.tokenizer, self.loaded.suppress, self.loaded.suppress_begin, options
            )
        return self._rules[options]

    def features(self, audio: Tensor, options: TranscribeOptions) -> Tensor:
        """Log-mel features of one window (<= 30 s), shape (n_mels, context frames)."""
        context = (
            N_FRAMES
            if options.full_window
            else context_frames_for(
                audio.shape[-1], options.min_context_s, options.context_margin_s
            )
        )
        return window_features(audio.float(), self.model.dims.n_mels, context)

    def prepare(self, audios: list[Tensor], options: TranscribeOptions) -> PreparedBatch:
        """The input stage: log-mel of each window, zero-padded into one batch tensor and
        moved towards the model's device. Runs on the prefetch thread while the model works
        on the previous batch; on CUDA the copy is issued on a side stream from pinned memory
        and recorded with an event that the model stream waits for."""
        mels = [self.features(a, options) for a in audios]
        frames = torch.tensor([m.shape[-1] for m in mels])
        width = int(frames.max())
        cuda = self.device.type == "cuda"
        batch = torch.zeros(len(mels), mels[0].shape[0], width, pin_memory=cuda)
        for i, mel in enumerate(mels):
            batch[i, :, : mel.shape[-1]] = mel
        ready = copy_started = None
        if cuda:
            stream = self._copy_stream()
            with torch.cuda.stream(stream):
                copy_started = torch.cuda.Event(enable_timing=True)
                copy_started.record(stream)
                batch = batch.to(self.device, dtype=self.plan.dtype, non_blocking=True)
                ready = torch.cuda.Event(enable_timing=True)
                ready.record(stream)
        else:
            batch = batch.to(dtype=self.plan.dtype)
        audio_positions = torch.tensor([-(-a.shape[-1] // (2 * HOP_LENGTH)) for a in audios])
        return PreparedBatch(
            batch, frames, torch.minimum(audio_positions, (frames + 1) // 2), ready
        )

    def _copy_stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return self._stream

    @torch.inference_mode()
    def encode(self, prepared: PreparedBatch) -> tuple[Tensor, Tensor]:
        """Run the encoder once on a prepared batch.
        Returns (features (batch, positions, state), real positions per item)."""
        if prepared.ready is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(prepared.ready)
            # allocated on the copy stream, read on this one: keep it from early reuse
            prepared.mel.record_stream(compute)
        frames, width = prepared.frames, prepared.mel.shape[-1]
        frames_arg = frames.to(self.device) if bool((frames < width).any()) else None
        features = self.model.encoder(prepared.mel, frames_arg).to(self.plan.decoder_dtype)
        return features, (frames + 1) // 2

    @torch.inference_mode()
    def decode(
        self,
        features: Tensor,
        positions: Tensor,
        audio_positions: Tensor,
        prompts: list[list[int]],
        options: TranscribeOptions,
        offsets: list[float],
        prefixes: list[list[int]] | None = None,
        drafts: list[list[int]] | None = None,
    ) -> list[Transcript]:
        """positions: encoder positions per item (context); audio_positions: the real audio;
        prefixes: known transcript starts; drafts: guesses of the rest (see
        decoding.greedy_decode)."""
        decoding = options.decoding
        # the audio keys/values serve both decoding and word alignment: project them once
        cross_kv = self.model.decoder.cross_cache(features)
        sequences = greedy_decode(
            self.model,
            self.tokenizer,
            self.rules(decoding),
            features,
            positions,
            prompts,
            decoding,
            prefixes,
            cross_kv,
            drafts,
        )
        results = [
            self._finish(seq, int(audio_positions[i]), options, offsets[i])
            for i, seq in enumerate(sequences)
        ]
        if options.word_timestamps:
            items = [
                (r.text_tokens, r.token_probs, int(audio_positions[i]))
                for i, r in enumerate(results)
            ]
            aligned = align_batch(
                self.model, self.tokenizer, self.loaded.alignment_heads, cross_kv, positions, items
            )
            for result, words, offset in zip(results, aligned, offsets):
                result.words = [
                    replace(w, start=w.start + offset, end=w.end + offset) for w in words
                ]
        return results

    def transcribe_batch(
        self,
        audios: list[Tensor],
        prompts: list[list[int]] | None = None,
        options: TranscribeOptions = TranscribeOptions(),
        offsets: list[float] | None = None,
    ) -> list[Transcript]:
        """Recognise several windows (each <= 30 s, 16 kHz mono) in one batched model call."""
        started = time.perf_counter()
        prepared = self.prepare(audios, options)
        ready = time.perf_counter()
        return self.run(
            prepared,
            prompts or [[] for _ in audios],
            options,
            offsets or [0.0] * len(audios),
            {"features_s": ready - started},
        )

    def run(
        self,
        prepared: PreparedBatch,
        prompts: list[list[int]],
        options: TranscribeOptions,
        offsets: list[float],
        timings: dict[str, float] | None = None,
        prefixes: list[list[int]] | None = None,
        drafts: list[list[int]] | None = None,
    ) -> list[Transcript]:
        """The model stage: encoder, batched decoding and word alignment for a prepared batch."""
        started = time.perf_counter()
        with batch_invariant(options.batch_invariant):
            features, positions = self.encode(prepared)
            encoded = time.perf_counter()
            results = self.decode(
                features,
                positions,
                prepared.audio_positions,
                prompts,
                options,
                offsets,
                prefixes,
                drafts,
            )
        timings = {
            **(timings or {}),
            "encode_s": encoded - started,
            "decode_s": time.perf_counter() - encoded,
        }
        for result in results:
            result.timings = timings
        return results

    def _finish(
        self,
        seq: DecodedSequence,
        positions: int,
        options: TranscribeOptions,
        offset: float,
    ) -> Transcript:
        tok = self.tokenizer
        text_tokens = [t for t in seq.tokens if t < tok.special.eot]
        probs = [
            math.exp(lp) for t, lp in zip(seq.tokens, seq.token_logprobs) if t < tok.special.eot
        ]
        text = tok.decode(text_tokens)
        dropped = ""
        if (
            seq.no_speech_prob > options.no_speech_threshold
            and seq.avg_logprob < options.logprob_threshold
        ):
            dropped = "no_speech"
        elif compression_ratio(text) > options.compression_ratio_threshold:
            dropped = "compression_ratio"
        if dropped:
            text_tokens, probs, text = [], [], ""
        segments = [] if dropped else self._segments(seq.tokens, offset, positions)
        return Transcript(
            text=text.strip(),
            segments=segments,
            words=[],
            tokens=list(seq.tokens),
            no_speech_prob=seq.no_speech_prob,
            avg_logprob=seq.avg_logprob,
            confidence=sum(probs) / len(probs) if probs else 0.0,
            repetition_loop=seq.repetition_loop,
            dropped=dropped,
            text_tokens=text_tokens,
            token_probs=probs,
        )

    def _segments(self, tokens: list[int], offset: float, positions: int) -> list[Segment]:
        """Split sampled tokens at timestamp pairs; text without timestamps is one segment."""
        tok = self.tokenizer
        end_of_audio = positions / TOKENS_PER_SECOND
        segments, current, start = [], [], 0.0
        for token in tokens:
            if tok.is_timestamp(token):
                stamp = tok.timestamp_seconds(token)
                if current:
                    segments.append(
                        Segment(
                            offset + start,
                            offset + min(stamp, end_of_audio),
                            tok.decode(current).strip(),
                            tuple(current),
                        )
                    )
                    current = []
                start = stamp
            else:
                current.append(token)
        if current:
            segments.append(
                Segment(
                    offset + start,
                    offset + end_of_audio,
                    tok.decode(current).strip(),
                    tuple(current),
                )
            )
        return [s for s in segments if s.text]

    def transcribe(
        self, audio: Tensor, options: TranscribeOptions = TranscribeOptions(), prompt: str = ""
    ) -> Transcript:
        """A whole recording of any length: 30 s windows, each continuing where the last
        complete segment ended and prompted with the text so far."""
        total = audio.shape[-1]
        seek, pieces = 0, []
        prompt_tokens = self.tokenizer.encode(" " + prompt.strip()) if prompt.strip() else []
        while seek < total:
            window = audio[seek : seek + N_SAMPLES]
            if window.shape[-1] < HOP_LENGTH * 2:
                break
            (result,) = self.transcribe_batch(
                [window], [prompt_tokens], options, [seek / SAMPLE_RATE]
            )
            pieces.append(result)
            seek += self._advance(result, window.shape[-1], seek)
            prompt_tokens = prompt_tokens + [
                t for t in result.tokens if t < self.tokenizer.special.eot
            ]
        return _merge(pieces)

    def _advance(self, result: Transcript, window: int, seek: int) -> int:
        """Samples to move on. A full window that was cut mid-segment restarts at its last
        timestamp, and the cut segment is decoded again from the next window."""
        stamps = [t for t in result.tokens if self.tokenizer.is_timestamp(t)]
        if window < N_SAMPLES or not stamps:
            return window
        last = self.tokenizer.timestamp_seconds(stamps[-1])
        advance = int(last * SAMPLE_RATE)
        if advance < SAMPLE_RATE:  # never stall on a window
            return window
        cutoff = seek / SAMPLE_RATE + last + 1e-6
        result.segments = [s for s in result.segments if s.end <= cutoff]
        result.words = [w for w in result.words if w.start < cutoff]
        result.text = " ".join(s.text for s in result.segments)
        return advance


def _merge(pieces: list[Transcript]) -> Transcript:
    if not pieces:
        return Transcript("", [], [], [], 1.0, 0.0, 0.0)
    texts = [p.text for p in pieces if p.text]
    confidences = [p.confidence for p in pieces if p.text]
    return Transcript(
        text=" ".join(texts),
        segments=[s for p in pieces for s in p.segments],
        words=[w for p in pieces for w in p.words],
        tokens=[t for p in pieces for t in p.tokens],
        no_speech_prob=min(p.no_speech_prob for p in pieces),
        avg_logprob=sum(p.avg_logprob for p in pieces) / len(pieces),
        confidence=sum(confidences) / len(confidences) if confidences else 0.0,
        repetition_loop=any(p.repetition_loop for p in pieces),
        dropped=",".join(p.dropped for p in pieces if p.dropped),
    )
