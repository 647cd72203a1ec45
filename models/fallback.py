"""Whisper's temperature fallback: a window whose greedy decode looks degenerate (text that
compresses too well, a low average log-probability, or a repetition loop) is decoded again
by sampling at rising temperatures until one decode passes, as openai/whisper and
faster-whisper do. Only the failing windows of a batch are decoded again. Before that, a
window whose greedy decode is merely unsure is searched with beams
(`TranscribeOptions.unsure_beam_size`), and a failing decode made without timestamp tokens
is made again with them (`TranscribeOptions.retry_with_timestamps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .decoding import DecodedSequence, DecodingOptions
from .options import TranscribeOptions
from .results import compression_ratio, is_silence, repeated_phrase

# decode(batch items, options) -> their sequences, in the same order
Decode = Callable[[list[int], DecodingOptions], list[DecodedSequence]]


def needs_fallback(seq: DecodedSequence, text: str, options: TranscribeOptions) -> bool:
    """Whether a decode should be tried again hotter. Silence is not: it yields no text
    whatever the temperature (results.guard drops it)."""
    if is_silence(seq, options):
        return False
    return (
        seq.repetition_loop
        or _degenerate(text, options)
        or (options.fallback_on_logprob and seq.avg_logprob < options.logprob_threshold)
    )


def _degenerate(text: str, options: TranscribeOptions) -> bool:
    """Text of a loop: it compresses too well, or repeats a phrase (where asked)."""
    repeats = options.loop_phrase_repeats
    return compression_ratio(text) > options.compression_ratio_threshold or bool(
        repeats
        and repeated_phrase(text, options.loop_phrase_words, repeats, options.loop_phrase_period)
    )


def decode_with_fallback(
    decode: Decode,
    items: int,
    text_of: Callable[[DecodedSequence], str],
    options: TranscribeOptions,
) -> list[DecodedSequence]:
    """Each item's decode at the first try of `_tries` that passes; where none does, the
    best of its tries (`_best`)."""
    ladder = _tries(options)
    if len(options.temperatures) == 1:  # no fallback (interims): nothing to judge, no text
        return _decode_at(decode, list(range(items)), ladder[0], options)
    tries: list[list[DecodedSequence]] = [[] for _ in range(items)]
    pending = list(range(items))
    for decoding in ladder:
        decoded = _decode_at(decode, pending, decoding, options)
        for item, seq in zip(pending, decoded):
            tries[item].append(seq)
        pending = [
            i for i, seq in zip(pending, decoded) if needs_fallback(seq, text_of(seq), options)
        ]
        if not pending:
            break
    return [_best(t, text_of, options) if i in pending else t[-1] for i, t in enumerate(tries)]


def _tries(options: TranscribeOptions) -> list[DecodingOptions]:
    """The decodes a failing window goes through, in order: one per temperature, and with
    `retry_with_timestamps` the first again with timestamp tokens."""
    ladder = [replace(options.decoding, temperature=t) for t in options.temperatures]
    if options.retry_with_timestamps and not options.decoding.timestamps:
        ladder.insert(1, replace(ladder[0], timestamps=True))
    return ladder


def _decode_at(
    decode: Decode, items: list[int], decoding: DecodingOptions, options: TranscribeOptions
) -> list[DecodedSequence]:
    """`items` decoded with `decoding`; at temperature 0, with beams where unsure (the
    greedy decode of a window stops once it is sure to be unsure: its text is not used)."""
    if decoding.temperature > 0:
        return decode(items, decoding)
    probe = decoding
    if options.unsure_beam_size > decoding.beam_size:
        probe = replace(
            decoding,
            hopeless_below=options.unsure_logprob,
            hopeless_no_speech=options.no_speech_threshold,
        )
    return _beam_where_unsure(decode, items, decode(items, probe), decoding, options)


def _beam_where_unsure(
    decode: Decode,
    items: list[int],
    decoded: list[DecodedSequence],
    decoding: DecodingOptions,
    options: TranscribeOptions,
) -> list[DecodedSequence]:
    """The greedy decodes, each unsure one (`options.unsure_logprob`; not silence) replaced by
    its beam search of `options.unsure_beam_size`: what the reference decodes at temperature
    0 by default, paid only where greedy doubts."""
    beams = options.unsure_beam_size
    if beams <= decoding.beam_size:
        return decoded
    unsure = [
        j
        for j, seq in enumerate(decoded)
        if seq.avg_logprob < options.unsure_logprob and not is_silence(seq, options)
    ]
    if not unsure:
        return decoded
    again = decode([items[j] for j in unsure], replace(decoding, beam_size=beams))
    out = list(decoded)
    for j, seq in zip(unsure, again):
        out[j] = seq
    return out


def _best(
    tries: Sequence[DecodedSequence],
    text_of: Callable[[DecodedSequence], str],
    options: TranscribeOptions,
) -> DecodedSequence:
    """No try passed: the most likely one that is not a loop (faster-whisper's choice; the
    compression guard would drop a loop's text), else the most likely of all."""
    fluent = [s for s in tries if not _degenerate(text_of(s), options)]
    return max(fluent or tries, key=lambda s: s.avg_logprob)
