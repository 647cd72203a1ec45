"""Batched greedy decoding with a key/value cache and Whisper's logit rules.

One call decodes many utterances at once: prompts of different lengths are left-padded and
masked, finished items leave the batch (their cache rows are dropped), and the loop stops when
every item has ended or hit a guard.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .tokenizer import TIME_PRECISION, WhisperTokenizer
from .whisper import KVCache, Whisper, key_padding_mask

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodingOptions:
    timestamps: bool = True  # emit <|t|> tokens (segments); False adds <|notimestamps|>
    max_new_tokens: int = 224  # sampled tokens per window (Whisper's n_text_ctx // 2)
    max_prompt_tokens: int = 223  # previous-text tokens kept (Whisper keeps n_text_ctx//2 - 1)
    suppress_blank: bool = True  # no blank or end-of-text as the first token
    max_initial_timestamp: float = 1.0  # seconds: the first timestamp may not be later
    cap_timestamps_to_audio: bool = False  # forbid timestamps past each item's audio end
    # Repetition-loop guard: stop when the tail is the same n-gram (n <= loop_max_ngram)
    # repeated at least loop_min_repeats times and covering loop_min_tokens tokens or more.
    loop_max_ngram: int = 12
    loop_min_repeats: int = 3
    loop_min_tokens: int = 12


@dataclass
class DecodedSequence:
    tokens: list[int]  # sampled tokens, text and timestamps, without <|endoftext|>
    token_logprobs: list[float]  # log-probability of each sampled token
    no_speech_prob: float  # probability of <|nospeech|> at the start of the transcript
    ended: bool  # reached <|endoftext|> (False: hit a guard or the length limit)
    repetition_loop: bool  # the loop guard cut a repeated tail

    @property
    def avg_logprob(self) -> float:
        return sum(self.token_logprobs) / max(1, len(self.token_logprobs))


def find_repetition_loop(tokens: list[int], options: DecodingOptions) -> int | None:
    """If the tail of `tokens` is a repeated n-gram, return the length to keep (one copy)."""
    size = len(tokens)
    for n in range(1, options.loop_max_ngram + 1):
        repeats = max(options.loop_min_repeats, -(-options.loop_min_tokens // n))
        if n * repeats > size:
            break
        gram = tokens[size - n :]
        if all(tokens[size - n * (k + 1) : size - n * k] == gram for k in range(1, repeats)):
            copies = repeats
            while tokens[size - n * (copies + 1) : size - n * copies] == gram:
                copies += 1
            return size - n * (copies - 1)
    return None


class LogitRules:
    """Whisper's suppression and timestamp rules, applied to a batch of logits in place."""

    def __init__(
        self,
        tokenizer: WhisperTokenizer,
        suppress: list[int],
        suppress_begin: list[int],
        options: DecodingOptions,
    ) -> None:
        self.special = tokenizer.special
        self.options = options
        self.suppress = torch.tensor(sorted(set(suppress)), dtype=torch.long)
        self.suppress_begin = torch.tensor(sorted(set(suppress_begin)), dtype=torch.long)
        self.max_initial = round(options.max_initial_timestamp / TIME_PRECISION)

    def apply(self, logits: Tensor, sampled: list[list[int]], max_ts: list[int] | None) -> None:
        logits[:, self.suppress.to(logits.device)] = NEG_INF
        # rows that have not produced (or been given) a token yet
        first = [k for k, seq in enumerate(sampled) if not seq]
        if first and self.options.suppress_blank:
            rows = torch.tensor(first, device=logits.device)[:, None]
            logits[rows, self.suppress_begin.to(logits.device)[None, :]] = NEG_INF
        if self.options.timestamps:
            self._timestamps(logits, sampled, first, max_ts)

    def _timestamps(
        self, logits: Tensor, sampled: list[list[int]], first: list[int], max_ts: list[int] | None
    ) -> None:
        ts_begin, eot = self.special.timestamp_begin, self.special.eot
        logits[:, self.special.no_timestamps] = NEG_INF
        for k, seq in enumerate(sampled):
            last_ts = len(seq) >= 1 and seq[-1] >= ts_begin
            penultimate_ts = len(seq) < 2 or seq[-2] >= ts_begin
            if last_ts:
                if penultimate_ts:  # a pair just closed: text (or the end) must follow
                    logits[k, ts_begin:] = NEG_INF
                else:  # an open timestamp must be closed: no text
                    logits[k, :eot] = NEG_INF
            stamps = [t for t in seq if t >= ts_begin]
            if stamps:  # timestamps never go back; a segment is never empty
                floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
                logits[k, ts_begin:floor] = NEG_INF
            if max_ts is not None:
                logits[k, ts_begin + max_ts[k] + 1 :] = NEG_INF
        for k in first:  # a transcript opens with a timestamp, no later than max_initial
            logits[k, :ts_begin] = NEG_INF
            logits[k, ts_begin + self.max_initial + 1 :] = NEG_INF
        # Take a timestamp whenever all timestamps together outweigh the best text token.
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        ts_mass = logprobs[:, ts_begin:].logsumexp(dim=-1)
        best_text = logprobs[:, :ts_begin].max(dim=-1).values
        force = ts_mass > best_text
        if bool(force.any()):
            logits[force, :ts_begin] = NEG_INF


def initial_tokens(
    tokenizer: WhisperTokenizer, prompt: list[int], options: DecodingOptions
) -> list[int]:
    """[<|startofprev|> prompt...] <|startoftranscript|> ... [<|notimestamps|>]"""
    tokens: list[int] = []
    if prompt:
        tokens = [tokenizer.special.sot_prev, *prompt[-options.max_prompt_tokens :]]
    tokens += tokenizer.sot_sequence
    if not options.timestamps:
        tokens.append(tokenizer.special.no_timestamps)
    return tokens


def _left_pad(sequences: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in sequences)
    pads = torch.tensor([width - len(s) for s in sequences])
    rows = [[pad] * (width - len(s)) + s for s in sequences]
    return torch.tensor(rows, dtype=torch.long), pads


@torch.inference_mode()
def greedy_decode(
    model: Whisper,
    tokenizer: WhisperTokenizer,
    rules: LogitRules,
    audio_features: Tensor,
    audio_positions: Tensor | None,
    prompts: list[list[int]],
    options: DecodingOptions,
    prefixes: list[list[int]] | None = None,
    cross_kv: list[tuple[Tensor, Tensor]] | None = None,
) -> list[DecodedSequence]:
    """Decode a batch. audio_features: (batch, positions, state) from the encoder;
    audio_positions: real encoder positions per item (None = all are real).

    prompts: earlier text per item (context, not part of the transcript). prefixes: the start
    of each transcript, already known (a stream's committed words): it is fed in one forward
    pass instead of being decoded token by token, and only the rest is decoded. cross_kv: the
    decoder's audio keys/values if the caller computed them already (`cross_cache`)."""
    device = audio_features.device
    prefixes = prefixes or [[] for _ in prompts]
    starts = [initial_tokens(tokenizer, p, options) + f for p, f in zip(prompts, prefixes)]
    tokens, pads = _left_pad(starts, tokenizer.special.eot)
    tokens, pads = tokens.to(device), pads.to(device)
    batch, width = tokens.shape
    dtype = audio_features.dtype
    cross_mask = None
    if audio_positions is not None and bool((audio_positions < audio_features.shape[1]).any()):
        cross_mask = key_padding_mask(audio_positions.to(device), audio_features.shape[1], dtype)
    causal = torch.full((width, width), NEG_INF, dtype=dtype, device=device).triu(1)
    first_mask = causal[None, None] + _pad_mask(pads, width, dtype)
    # A padding query would see no key at all (a NaN row); let it see itself instead.
    diagonal = torch.arange(width, device=device)
    first_mask[:, :, diagonal, diagonal] = 0.0
    positions = (torch.arange(width, device=device)[None, :] - pads[:, None]).clamp(min=0)
    cache = KVCache([], cross_kv or model.decoder.cross_cache(audio_features))
    hidden, cache = model.decoder(tokens, positions, cache, first_mask, cross_mask)

    opening = len(tokenizer.sot_sequence) + (0 if options.timestamps else 1)
    rows = torch.arange(batch, device=device)
    sot_index = torch.tensor([width - len(f) - opening for f in prefixes], device=device)
    # logits of one position per item are taken as (batch, 1, state): the int8 CPU head
    # computes those row by row (see precision.RowwiseInt8Linear)
    sot_logits = model.decoder.logits(hidden[rows, sot_index][:, None])[:, 0]
    no_speech = sot_logits.softmax(dim=-1)[:, tokenizer.special.no_speech].tolist()
    logits = model.decoder.logits(hidden[:, -1:])[:, 0]
    prefix_logprobs = _prefix_logprobs(model, hidden, prefixes, width)

    max_ts = None
    if options.cap_timestamps_to_audio and audio_positions is not None:
        max_ts = audio_positions.tolist()
    results = [
        DecodedSequence(list(prefixes[i]), prefix_logprobs[i], no_speech[i], False, False)
        for i in range(batch)
    ]
    active = list(range(batch))  # original index of each row still decoding
    step_positions = positions[:, -1] + 1
    limit = min(options.max_new_tokens, model.dims.n_text_ctx - width)
    for step in range(limit):
        sampled = [results[i].tokens for i in active]
        rules.apply(logits, sampled, [max_ts[i] for i in active] if max_ts else None)
        logprobs = torch.log_softmax(logits, dim=-1)
        next_tokens = logprobs.argmax(dim=-1)
        picked = logprobs.gather(1, next_tokens[:, None])[:, 0].tolist()
        keep_rows = []
        for row, (token, logprob) in enumerate(zip(next_tokens.tolist(), picked)):
            result = results[active[row]]
            if token == tokenizer.special.eot:
                result.ended = True
                continue
            result.tokens.append(token)
            result.token_logprobs.append(logprob)
            cut = find_repetition_loop(result.tokens, options)
            if cut is not None:
                del result.tokens[cut:], result.token_logprobs[cut:]
                result.repetition_loop = True
                continue
            keep_rows.append(row)
        if not keep_rows or step == limit - 1:
            break
        if len(keep_rows) < len(active):
            index = torch.tensor(keep_rows, device=device)
            cache, pads = cache.select(index), pads[index]
            step_positions, next_tokens = step_positions[index], next_tokens[index]
            if cross_mask is not None:
                cross_mask = cross_mask[index]
            active = [active[r] for r in keep_rows]
        mask = _pad_mask(pads, width + step + 1, dtype)
        hidden, cache = model.decoder(
            next_tokens[:, None], step_positions[:, None], cache, mask, cross_mask
        )
        step_positions = step_positions + 1
        logits = model.decoder.logits(hidden[:, -1:])[:, 0]
    return results


def _prefix_logprobs(
    model: Whisper, hidden: Tensor, prefixes: list[list[int]], width: int
) -> list[list[float]]:
    """Log-probability of each given prefix token, from the position before it."""
    out: list[list[float]] = []
    for i, prefix in enumerate(prefixes):
        if not prefix:
            out.append([])
            continue
        start = width - len(prefix)
        logprobs = torch.log_softmax(model.decoder.logits(hidden[i, start - 1 : width - 1]), -1)
        ids = torch.tensor(prefix, device=hidden.device)[:, None]
        out.append(logprobs.gather(1, ids)[:, 0].tolist())
    return out


def _pad_mask(pads: Tensor, total: int, dtype: torch.dtype) -> Tensor:
    """Additive mask (batch, 1, 1, total) hiding each item's left padding."""
    hidden = torch.arange(total, device=pads.device)[None, :] < pads[:, None]
    mask = torch.zeros(hidden.shape, dtype=dtype, device=pads.device)
    return mask.masked_fill(hidden, NEG_INF)[:, None, None, :]
