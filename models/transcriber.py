"""The model package's one entry: audio windows and text in, transcripts with word times out.

Callers speak text: a `Request` holds a window of audio with its prompt, known prefix and
draft as strings; tokenising them is the model's business. `prepare` (the input stage: log-mel
features, tokens, the host-to-device copy) and `run` (encoder, batched decoding, alignment) are
separate so a server can prepare batch k+1 while batch k is on the model;
`transcribe_batch` does both, and `transcribe` handles a whole file of any length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from . import loading
from .alignment import Word, align_batch
from .audio import HOP_LENGTH, N_FRAMES, encoder_frames_for, pad_features, window_features
from .beam import BeamSearch
from .decoding import (
    DecodedSequence,
    DecodeInputs,
    DecodingOptions,
    LogitFilter,
    PhraseBias,
    greedy_decode,
    logit_filters,
    spread_boost,
)
from .fallback import decode_with_fallback
from .longform import transcribe_long
from .options import Request, TranscribeOptions
from .precision import PrecisionPlan, apply_precision, choose_precision
from .results import Transcript, to_transcript
from .tokenizer import WhisperTokenizer
from .whisper import TextDecoder

__all__ = [
    "PreparedBatch",
    "Request",
    "TranscribeOptions",
    "Transcriber",
    "Transcript",
    "Word",
]


@dataclass(frozen=True)
class PreparedBatch:
    mel: Tensor  # (batch, n_mels, frames) on the model's device (or being copied there)
    frames: Tensor  # mel frames per item, audio + padding up to its encoder span (CPU)
    audio_positions: Tensor  # encoder positions that hold real audio, per item
    prompts: list[list[int]]
    prefixes: list[list[int]]
    drafts: list[list[int]]
    offsets: list[float]
    # per item: each boosted phrase's tokens and their parts of its boost (decoding.PhraseBias)
    hotwords: list[list[tuple[list[int], list[float]]]] = field(default_factory=list)
    ready: torch.cuda.Event | None = None  # CUDA: set when the host-to-device copy has ended
    copy_started: torch.cuda.Event | None = None  # CUDA: when the copy began (profiling)


class Transcriber:
    """A loaded model with its precision applied; thread-compatible (one call at a time)."""

    def __init__(self, loaded: loading.LoadedModel, plan: PrecisionPlan) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.plan = plan
        self.device = torch.device(plan.device)
        self._filters: dict[DecodingOptions, tuple[LogitFilter, ...]] = {}
        self._copy_stream: torch.cuda.Stream | None = None
        self._eot = self.tokenizer.special.eot

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

    def prepare(self, requests: Sequence[Request], options: TranscribeOptions) -> PreparedBatch:
        """The input stage: log-mel of each window, zero-padded into one batch tensor and moved
        towards the model's device, and the token ids of the texts. Runs on a prefetch thread
        while the model works on the previous batch; on CUDA the copy is issued on a side
        stream from pinned memory and recorded with events that the model stream waits for."""
        mels = [_features(r, options, self.model.dims.n_mels) for r in requests]
        frames = torch.tensor([m.shape[-1] for m in mels])
        cuda = self.device.type == "cuda"
        batch = torch.zeros(len(mels), mels[0].shape[0], int(frames.max()), pin_memory=cuda)
        for i, mel in enumerate(mels):
            batch[i, :, : mel.shape[-1]] = mel
        batch, ready, copy_started = self._to_device(batch)
        audio_positions = torch.tensor(
            [-(-r.audio.shape[-1] // (2 * HOP_LENGTH)) for r in requests]
        )
        return PreparedBatch(
            mel=batch,
            frames=frames,
            audio_positions=torch.minimum(audio_positions, (frames + 1) // 2),
            prompts=[self.tokenizer.encode_text(r.prompt) for r in requests],
            prefixes=[self.tokenizer.encode_text(r.prefix) for r in requests],
            drafts=[self.tokenizer.encode_text(r.draft) for r in requests],
            offsets=[r.offset_s for r in requests],
            hotwords=[_spelled_hotwords(self.tokenizer, r.hotwords) for r in requests],
            ready=ready,
            copy_started=copy_started,
        )

    @torch.inference_mode()
    def run(self, prepared: PreparedBatch, options: TranscribeOptions) -> list[Transcript]:
        """The model stage: encoder, batched decoding and word alignment of a prepared batch."""
        decoder = self._decoder_for(options)
        features, positions = self.encode(prepared)
        # the audio keys/values serve both decoding and word alignment: project them once
        cross_kv = decoder.cross_cache(features)
        inputs = DecodeInputs(
            features, positions, prepared.prompts, prepared.prefixes, prepared.drafts, cross_kv
        )
        sequences = decode_with_fallback(
            lambda items, decoding: self._decode(decoder, inputs, prepared, items, decoding),
            len(prepared.prompts),
            lambda seq: self.tokenizer.decode([t for t in seq.tokens if t < self._eot]),
            options,
        )
        real = prepared.audio_positions.tolist()
        results = [
            to_transcript(seq, self.tokenizer, options, real[i], prepared.offsets[i])
            for i, seq in enumerate(sequences)
        ]
        if options.word_timestamps:
            items = [(r.text_tokens, r.token_probs, real[i]) for i, r in enumerate(results)]
            heads = self.loaded.alignment_heads
            aligned = align_batch(decoder, self.tokenizer, heads, cross_kv, positions, items)
            for result, words, offset in zip(results, aligned, prepared.offsets):
                result.words = [
                    replace(w, start=w.start + offset, end=w.end + offset) for w in words
                ]
        return results

    def transcribe_batch(
        self, requests: Sequence[Request], options: TranscribeOptions = TranscribeOptions()
    ) -> list[Transcript]:
        """Recognise several windows in one batched model call."""
        return self.run(self.prepare(requests, options), options)

    def transcribe(
        self,
        audio: Tensor,
        options: TranscribeOptions = TranscribeOptions(),
        prompt: str = "",
        hotwords: tuple[tuple[str, float], ...] = (),
    ) -> Transcript:
        """A whole recording of any length (models.longform); `hotwords`: phrases and boosts
        (decoding.PhraseBias)."""
        return transcribe_long(self, audio, options, prompt, hotwords)

    def _decode(
        self,
        decoder: TextDecoder,
        inputs: DecodeInputs,
        prepared: PreparedBatch,
        items: list[int],
        decoding: DecodingOptions,
    ) -> list[DecodedSequence]:
        """Decode the batch's `items` (all of them, or a fallback's few) with `decoding`."""
        hotwords = prepared.hotwords
        if len(items) < len(inputs.prompts):
            inputs = inputs.select(items)
            hotwords = [hotwords[i] for i in items] if hotwords else []
        filters = self._logit_filters(decoding)
        if any(hotwords):
            # first: the timestamp grammar must see the biased logits
            filters = (PhraseBias(hotwords), *filters)
        if decoding.beam_size > 1 and decoding.temperature <= 0:
            return BeamSearch(decoder, self.tokenizer, filters, decoding).decode(inputs)
        return greedy_decode(decoder, self.tokenizer, filters, decoding, inputs)

    def _to_device(
        self, batch: Tensor
    ) -> tuple[Tensor, torch.cuda.Event | None, torch.cuda.Event | None]:
        """The batch in the encoder's dtype on the model's device; on CUDA the copy runs on a
        side stream, bracketed by two events (started, ready)."""
        if self.device.type != "cuda":
            return batch.to(dtype=self.plan.dtype), None, None
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            started = torch.cuda.Event(enable_timing=True)
            started.record(self._copy_stream)
            batch = batch.to(self.device, dtype=self.plan.dtype, non_blocking=True)
            ready = torch.cuda.Event(enable_timing=True)
            ready.record(self._copy_stream)
        return batch, ready, started

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

    def _decoder_for(self, options: TranscribeOptions) -> TextDecoder:
        if options.batch_invariant and self.model.exact_decoder is not None:
            return self.model.exact_decoder
        return self.model.decoder

    def _logit_filters(self, options: DecodingOptions) -> tuple[LogitFilter, ...]:
        if options not in self._filters:
            loaded = self.loaded
            self._filters[options] = logit_filters(
                self.tokenizer, loaded.suppress, loaded.suppress_begin, options
            )
        return self._filters[options]


# A stream asks with the same phrases at every decode (100 of them took ~3 ms to spell);
# the lists are only read (decoding.PhraseBias).
@lru_cache(maxsize=256)
def _spelled_hotwords(
    tokenizer: WhisperTokenizer, hotwords: tuple[tuple[str, float], ...]
) -> list[tuple[list[int], list[float]]]:
    """Boosted phrases (Request.hotwords) as the tokens they are spelled with, and each
    token's part of its phrase's boost (decoding.spread_boost)."""
    spelled = []
    for phrase, boost in hotwords:
        tokens = tokenizer.encode_text(" " + phrase.strip())
        if tokens and boost > 0:
            letters = [len(tokenizer.decode([t]).strip()) for t in tokens]
            spelled.append((tokens, spread_boost(boost, letters)))
    return spelled


def _features(request: Request, options: TranscribeOptions, n_mels: int) -> Tensor:
    """Log-mel features of one window (<= 30 s), shape (n_mels, encoder frames)."""
    audio = request.audio
    if options.full_window:
        span = N_FRAMES
    else:
        span = encoder_frames_for(audio.shape[-1], options.min_encoder_s, options.encoder_margin_s)
    if request.features is not None:
        return pad_features(request.features, span)
    return window_features(audio.float(), n_mels, span)
