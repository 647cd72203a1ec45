"""Beam search over the text decoder, as openai/whisper and faster-whisper run it at
temperature 0 with `beam_size` > 1: each window keeps its `beam_size` most likely token
sequences, every beam offers its `beam_size + 1` best next tokens, a sequence that picks
<|endoftext|> is finished, and the search ends once `beam_size` sequences have finished (or
the length limit is reached); the finished sequence with the best average log-probability
per sampled token wins. The same logit filters as greedy decoding apply to every beam.
Windows are searched one at a time (a window's beams are its batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .decoding import (
    DecodedSequence,
    DecodeInputs,
    DecodingOptions,
    LogitFilter,
    block_mask,
    find_repetition_loop,
    initial_tokens,
    no_speech_probs,
    prefix_logprobs,
)
from .tokenizer import WhisperTokenizer
from .whisper import KVCache, TextDecoder, pick_rows


@dataclass(frozen=True)
class _Beam:
    tokens: tuple[int, ...]  # sampled tokens (after the prefix)
    logprobs: tuple[float, ...]  # of each sampled token
    score: float  # their sum
    loop: bool = False  # ended by the repetition-loop guard


@dataclass(frozen=True)
class BeamSearch:
    """What a search needs besides its windows: the text decoder whose kernels to use, the
    tokenizer, the logit filters (greedy decoding's) and the options (`beam_size`)."""

    decoder: TextDecoder
    tokenizer: WhisperTokenizer
    filters: tuple[LogitFilter, ...]
    options: DecodingOptions

    def decode(self, inputs: DecodeInputs) -> list[DecodedSequence]:
        """Each window of `inputs` by beam search of `options.beam_size` beams (drafts are
        not used: they only speed up greedy decoding). Called under torch.inference_mode
        (the transcriber's model stage)."""
        return [self._search(inputs.select([i]), i) for i in range(len(inputs.prompts))]

    def _search(self, x: DecodeInputs, item: int) -> DecodedSequence:
        """One window (`x` holds it alone; `item`: its place in the caller's batch)."""
        decoder, options = self.decoder, self.options
        device, dtype = x.features.device, x.features.dtype
        prefix = x.prefixes[0]
        opening = initial_tokens(self.tokenizer, x.prompts[0], options) + prefix
        n_ctx = decoder.positional_embedding.shape[0]
        cap = max(0, min(options.max_new_tokens, n_ctx - len(opening)))
        cross_mask = x.audio_mask()
        width = len(opening)
        tokens = torch.tensor([opening], device=device)
        positions = torch.arange(width, device=device)[None, :]
        holes = torch.zeros((1, width), dtype=torch.bool, device=device)
        audio_kv = x.cross_kv or decoder.cross_cache(x.features)
        mask = block_mask(holes, width, dtype)
        hidden, cache = decoder(tokens, positions, KVCache([], audio_kv), mask, cross_mask)
        no_speech = no_speech_probs(decoder, self.tokenizer, options, hidden, [width], [prefix])
        given = prefix_logprobs(decoder, hidden, [prefix], [width])[0]
        beams, finished = [_Beam((), (), 0.0)], []
        hidden = hidden[:, -1:]
        for step in range(cap):
            offered = self._offered(hidden, prefix, beams, item)
            beams, source, done = _extend(beams, offered, options, self.tokenizer.special.eot)
            finished += done
            if len(finished) >= options.beam_size or not beams or step + 1 == cap:
                break
            cache = _reordered(cache, source)
            fed = torch.tensor([[b.tokens[-1]] for b in beams], device=device)
            at = torch.full((len(beams), 1), width + step, device=device)
            hidden, cache = decoder(fed, at, cache, None, cross_mask)
        best = _best(finished or beams)
        return DecodedSequence(
            [*prefix, *best.tokens],
            [*given, *best.logprobs],
            no_speech[0],
            ended=best in finished and not best.loop,
            repetition_loop=best.loop,
            temperature=options.temperature,
            beam_size=options.beam_size,
        )

    def _offered(
        self, hidden: Tensor, prefix: list[int], beams: list[_Beam], item: int
    ) -> tuple[Tensor, Tensor]:
        """Each beam's `beam_size + 1` best next tokens after the filters: their
        log-probabilities and ids, (beams, beam_size + 1) each. From the quicker logits
        (`TextDecoder.pick_logits`: the likely tokens exact, the rest approximate) when every
        token offered was exact there."""
        rows = [[*prefix, *b.tokens] for b in beams], [item] * len(beams)
        count = self.options.beam_size + 1
        logits, exact = self.decoder.pick_logits(hidden)
        top = _filtered(logits[:, 0], self.filters, rows).topk(count, dim=-1)
        if all(exact(top.indices[:, j]) for j in range(count)):
            return top.values, top.indices
        top = _filtered(self.decoder.logits(hidden)[:, 0], self.filters, rows).topk(count, dim=-1)
        return top.values, top.indices


def _reordered(cache: KVCache, source: list[int]) -> KVCache:
    """The self-attention cache with a row per new beam, that of the beam it grew from. As it
    is where each beam grew from the one in its place (a third of the steps on noisy audio);
    the beams share the window's audio keys, which stay as they are."""
    keys = cache.self_kv[0][0]
    if source == list(range(keys.shape[0])):
        return cache
    index = torch.tensor(source, device=keys.device)
    return KVCache(pick_rows(cache.self_kv, index), cache.cross_kv)


def _filtered(
    logits: Tensor, filters: tuple[LogitFilter, ...], rows: tuple[list[list[int]], list[int]]
) -> Tensor:
    """Log-probabilities after the logit filters (`rows`: each row's tokens and item)."""
    for logit_filter in filters:
        logit_filter.apply(logits, *rows)
    return torch.log_softmax(logits.float(), dim=-1)


def _extend(
    beams: list[_Beam], offered: tuple[Tensor, Tensor], options: DecodingOptions, eot: int
) -> tuple[list[_Beam], list[int], list[_Beam]]:
    """The next beams (best first), the beam each came from, and the sequences that finished
    among the candidates ranked above the last kept beam (Whisper's rule); `offered`: each
    beam's best next tokens (log-probabilities, ids)."""
    size = options.beam_size
    top, ids = offered
    candidates = []
    for k, beam in enumerate(beams):
        for logprob, token in zip(top[k].tolist(), ids[k].tolist()):
            if logprob != float("-inf"):
                candidates.append((beam.score + logprob, k, token, logprob))
    candidates.sort(key=lambda c: c[0], reverse=True)
    kept, source, done = [], [], []
    for score, k, token, logprob in candidates:
        beam = beams[k]
        if token == eot:  # ranked with the end's log-probability, as Whisper does
            done.append(_Beam(beam.tokens, beam.logprobs, score))
            continue
        grown = _Beam((*beam.tokens, token), (*beam.logprobs, logprob), score)
        cut = find_repetition_loop(list(grown.tokens), options)
        if cut is not None:
            done.append(
                _Beam(grown.tokens[:cut], grown.logprobs[:cut], sum(grown.logprobs[:cut]), True)
            )
            continue
        kept.append(grown)
        source.append(k)
        if len(kept) == size:
            break
    return kept, source, done


def _best(beams: list[_Beam]) -> _Beam:
    """The most likely sequence per sampled token (Whisper's ranking without a length
    penalty)."""
    return max(beams, key=lambda b: b.score / max(1, len(b.tokens)))
