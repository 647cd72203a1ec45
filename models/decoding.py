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
# Guessed tokens fed per pass: each needs a row of logits (the 51864-wide output
# projection), so a long guess that breaks early costs more than it saves.
MAX_DRAFT = 16
RESYNC_AHEAD = 3  # draft tokens looked through for the picked one after a mismatch


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


@dataclass
class _Row:
    """An item that is still decoding."""

    index: int  # its place in the batch given to greedy_decode
    result: DecodedSequence
    known: int  # tokens of the result that were given (the prefix), not sampled
    cap: int  # most tokens it may sample
    draft: list[int]  # its guess of the transcript after the prefix
    pointer: int = 0  # where in `draft` the next guess starts
    misses: int = 0  # passes in a row whose guess was rejected at its first token
    pending: int = 0  # the newest sampled token, not yet fed to the model
    position: int = 0  # text position of the newest token fed (or pending)

    @property
    def sampled(self) -> int:
        return len(self.result.tokens) - self.known


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
    drafts: list[list[int]] | None = None,
) -> list[DecodedSequence]:
    """Decode a batch. audio_features: (batch, positions, state) from the encoder;
    audio_positions: real encoder positions per item (None = all are real).

    prompts: earlier text per item (context, not part of the transcript). prefixes: the start
    of each transcript, already known (a stream's committed words): it is fed in one forward
    pass instead of being decoded token by token, and only the rest is decoded. cross_kv: the
    decoder's audio keys/values if the caller computed them already (`cross_cache`).

    drafts: a guess of the rest of each transcript (a stream's previous hypothesis). Guessed
    tokens are fed with the newest sampled one and kept only as far as greedy decoding picks
    them too, so the transcript is the greedy one whatever the guess; a good guess makes it
    take a few forward passes instead of one per token ("prompt lookup" decoding)."""
    device = audio_features.device
    prefixes = prefixes or [[] for _ in prompts]
    drafts = drafts or [[] for _ in prompts]
    openings = [initial_tokens(tokenizer, p, options) + f for p, f in zip(prompts, prefixes)]
    caps = [max(0, min(options.max_new_tokens, model.dims.n_text_ctx - len(o))) for o in openings]
    guesses = [_guess(d, 0, 0, c) for d, c in zip(drafts, caps)]
    tokens, pads = _left_pad([o + g for o, g in zip(openings, guesses)], tokenizer.special.eot)
    tokens, pads = tokens.to(device), pads.to(device)
    batch, width = tokens.shape
    dtype = audio_features.dtype
    cross_mask = None
    if audio_positions is not None and bool((audio_positions < audio_features.shape[1]).any()):
        cross_mask = key_padding_mask(audio_positions.to(device), audio_features.shape[1], dtype)
    # Cache columns that hold no token of their item (left padding, rejected guesses): hidden.
    holes = torch.arange(width, device=device)[None, :] < pads[:, None]
    first_mask = _block_mask(holes, width, dtype)
    # A padding query would see no key at all (a NaN row); let it see itself instead.
    diagonal = torch.arange(width, device=device)
    first_mask[:, :, diagonal, diagonal] = 0.0
    positions = (torch.arange(width, device=device)[None, :] - pads[:, None]).clamp(min=0)
    cache = KVCache([], cross_kv or model.decoder.cross_cache(audio_features))
    hidden, cache = model.decoder(tokens, positions, cache, first_mask, cross_mask)

    opening = len(tokenizer.sot_sequence) + (0 if options.timestamps else 1)
    rows = torch.arange(batch, device=device)
    ends = [width - len(g) for g in guesses]  # column after each item's prefix
    sot_index = torch.tensor([e - len(f) - opening for e, f in zip(ends, prefixes)], device=device)
    # logits of one position per item are taken as (batch, 1, state): the int8 CPU head
    # computes those row by row (see precision.RowwiseInt8Linear)
    sot_logits = model.decoder.logits(hidden[rows, sot_index][:, None])[:, 0]
    no_speech = sot_logits.softmax(dim=-1)[:, tokenizer.special.no_speech].tolist()
    prefix_logprobs = _prefix_logprobs(model, hidden, prefixes, ends)

    results = [
        DecodedSequence(list(prefixes[i]), prefix_logprobs[i], no_speech[i], False, False)
        for i in range(batch)
    ]
    live = [
        _Row(i, results[i], len(prefixes[i]), caps[i], drafts[i], position=len(openings[i]) - 1)
        for i in range(batch)
    ]
    max_ts = None
    if options.cap_timestamps_to_audio and audio_positions is not None:
        max_ts = audio_positions.tolist()
    # Each pass: verify the guesses against the model's picks, hide the rejected columns,
    # drop finished items, then feed every item's new token and its next guess.
    starts = [e - 1 for e in ends]  # column whose output predicts each item's next token
    while True:
        used = _verify(model, tokenizer, rules, options, hidden, starts, live, guesses, max_ts)
        block = holes.shape[1] - hidden.shape[1]
        for k, count in enumerate(used):
            if count is not None:
                holes[k, block + count :] = True
        keep = [k for k, count in enumerate(used) if count is not None]
        if not keep:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache, holes = cache.select(index), holes[index]
            cross_mask = None if cross_mask is None else cross_mask[index]
            live = [live[k] for k in keep]
        guesses = [_guess(r.draft, r.pointer, r.misses, r.cap - r.sampled) for r in live]
        span = 1 + max(len(g) for g in guesses)
        fed = [
            [r.pending, *g] + [tokenizer.special.eot] * (span - 1 - len(g))
            for r, g in zip(live, guesses)
        ]
        tokens = torch.tensor(fed, dtype=torch.long, device=device)
        positions = torch.tensor([r.position for r in live], device=device)[:, None]
        positions = (positions + torch.arange(span, device=device)).clamp(
            max=model.dims.n_text_ctx - 1
        )
        padding = (
            torch.arange(span, device=device)[None, :]
            > torch.tensor([len(g) for g in guesses], device=device)[:, None]
        )
        holes = torch.cat([holes, padding], dim=1)
        mask = _block_mask(holes, span, dtype)
        hidden, cache = model.decoder(tokens, positions, cache, mask, cross_mask)
        starts = [0] * len(live)
    return results


def _verify(
    model: Whisper,
    tokenizer: WhisperTokenizer,
    rules: LogitRules,
    options: DecodingOptions,
    hidden: Tensor,
    starts: list[int],
    live: list[_Row],
    guesses: list[list[int]],
    max_ts: list[int] | None,
) -> list[int | None]:
    """Take each live item's greedy picks from `hidden` (the block just fed): the token at its
    `starts` column, and one more for each guessed token that was picked. Returns, per item,
    how many columns of the block hold its tokens from now on (None: it has finished)."""
    items, columns, sampled = [], [], []
    for k, (row, guess) in enumerate(zip(live, guesses)):
        for j in range(len(guess) + 1):
            items.append(k)
            columns.append(starts[k] + j)
            sampled.append(row.result.tokens + guess[:j])
    logits = model.decoder.logits(hidden[items, columns][:, None])[:, 0]
    rules.apply(logits, sampled, [max_ts[live[k].index] for k in items] if max_ts else None)
    logprobs = torch.log_softmax(logits, dim=-1)
    best = logprobs.argmax(dim=-1)
    best_logprobs = logprobs.gather(1, best[:, None])[:, 0].tolist()
    best = best.tolist()
    used: list[int | None] = []
    n = 0
    for k, (row, guess) in enumerate(zip(live, guesses)):
        count = None
        for j in range(len(guess) + 1):
            token = best[n + j]
            if row.sampled >= row.cap:
                break
            if not _take(row.result, token, best_logprobs[n + j], tokenizer, options):
                break
            if row.sampled >= row.cap:
                break
            if j < len(guess) and token == guess[j]:
                continue  # the guess is what the model picks: its column stands
            if guess:  # a taken guess restores the full size; six misses end guessing
                row.misses = row.misses + 1 if j == 0 else 0
            row.pending, row.position = token, row.position + j + 1
            row.pointer = _resync(row.draft, row.pointer + j, token, tokenizer)
            count = starts[k] + j + 1
            break
        n += len(guess) + 1
        used.append(count)
    return used


def _guess(draft: list[int], pointer: int, misses: int, room: int) -> list[int]:
    """The draft tokens to feed from `pointer` on, for an item that may sample `room` more
    tokens (a guess leaves room for the token the model picks after it). After two passes in
    a row that rejected the guess outright (`misses`), it halves with each more: a draft that
    has nothing to do with what the model hears costs a few wasted columns, not MAX_DRAFT per
    token. (One outright miss is common with a good draft: the model inserts a punctuation
    mark.)"""
    size = min(MAX_DRAFT >> max(0, misses - 1), room - 1)
    return draft[pointer : pointer + max(0, size)]


def _take(
    result: DecodedSequence,
    token: int,
    logprob: float,
    tokenizer: WhisperTokenizer,
    options: DecodingOptions,
) -> bool:
    """Append a picked token; False when the item is done (end of text, repetition loop)."""
    if token == tokenizer.special.eot:
        result.ended = True
        return False
    result.tokens.append(token)
    result.token_logprobs.append(logprob)
    cut = find_repetition_loop(result.tokens, options)
    if cut is not None:
        del result.tokens[cut:], result.token_logprobs[cut:]
        result.repetition_loop = True
        return False
    return True


def _resync(draft: list[int], at: int, token: int, tokenizer: WhisperTokenizer) -> int:
    """Where the guess goes on after the model picked `token` where the draft has `at`:
    just past the token if the draft holds it a little further on (the model skipped draft
    tokens); at the same place after a punctuation mark (inserted: the later interims'
    words lack the punctuation that the end of a sentence gets); else past one token
    (a different word)."""
    for ahead in range(RESYNC_AHEAD):
        if at + ahead < len(draft) and draft[at + ahead] == token:
            return at + ahead + 1
    text = tokenizer.decode([token])
    inserted = bool(text) and not text.startswith(" ") and not any(c.isalnum() for c in text)
    return at if inserted else at + 1


def _prefix_logprobs(
    model: Whisper, hidden: Tensor, prefixes: list[list[int]], ends: list[int]
) -> list[list[float]]:
    """Log-probability of each given prefix token (ending before column `ends`), from the
    position before it."""
    out: list[list[float]] = []
    for i, (prefix, end) in enumerate(zip(prefixes, ends)):
        if not prefix:
            out.append([])
            continue
        start = end - len(prefix)
        logprobs = torch.log_softmax(model.decoder.logits(hidden[i, start - 1 : end - 1]), -1)
        ids = torch.tensor(prefix, device=hidden.device)[:, None]
        out.append(logprobs.gather(1, ids)[:, 0].tolist())
    return out


def _block_mask(holes: Tensor, span: int, dtype: torch.dtype) -> Tensor:
    """Additive self-attention mask (batch, 1, span, columns) for a block of `span` new
    tokens at the end of the cache: hole columns are hidden, and the block is causal."""
    columns = holes.shape[1]
    mask = torch.zeros((holes.shape[0], 1, span, columns), dtype=dtype, device=holes.device)
    mask.masked_fill_(holes[:, None, None, :], NEG_INF)
    if span > 1:
        causal = torch.full((span, span), NEG_INF, dtype=dtype, device=holes.device).triu(1)
        mask[:, :, :, columns - span :] += causal
    return mask
