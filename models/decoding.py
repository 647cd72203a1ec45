"""Batched greedy decoding with a key/value cache, Whisper's logit filters and draft checking.

Whisper's own shape: `DecodingOptions` (frozen, validated), small `LogitFilter`s (suppressed
tokens, blank start, timestamp rules) and one token decoder, `greedy_decode`. One call decodes
many windows at once: prompts of different lengths are left-padded and masked, finished items
leave the batch (their cache rows are dropped), and the loop stops when every item has ended
or hit a guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .tokenizer import TIME_PRECISION, SpecialTokens, WhisperTokenizer
from .whisper import KVCache, TextDecoder, key_padding_mask, pick_rows

NEG_INF = float("-inf")
# Guessed tokens fed per pass: each needs a row of logits (the 51864-wide output
# projection), so a long guess that breaks early costs more than it saves.
MAX_DRAFT = 16
RESYNC_LOOKAHEAD = 3  # draft tokens looked through for the picked one after a mismatch


@dataclass(frozen=True)
class DecodingOptions:
    timestamps: bool = True  # emit <|t|> tokens (segments); False adds <|notimestamps|>
    max_new_tokens: int = 224  # sampled tokens per window (Whisper's n_text_ctx // 2)
    max_prompt_tokens: int = 223  # previous-text tokens kept (Whisper keeps n_text_ctx//2 - 1)
    suppress_blank: bool = True  # no blank or end-of-text as the first token
    max_initial_timestamp: float = 1.0  # seconds: the first timestamp may not be later
    # Repetition-loop guard: stop when the tail is the same n-gram (n <= loop_max_ngram)
    # repeated at least loop_min_repeats times and covering loop_min_tokens tokens or more.
    loop_max_ngram: int = 12
    loop_min_repeats: int = 3
    loop_min_tokens: int = 12
    # 0: greedy. Above 0: each token is sampled from softmax(logits / temperature) with a
    # generator seeded by `seed`, so a fallback decode is the same on every run.
    temperature: float = 0.0
    seed: int = 0
    # Above 1: at temperature 0, beam search of this many beams (models.beam); a fallback
    # at a higher temperature samples one sequence as greedy decoding does.
    beam_size: int = 1
    # Greedy decoding before a beam search (models.fallback): an item whose average
    # log-probability can no longer come up to `hopeless_below` (its sum is under that times
    # the most tokens it may have) stops there, unless its no-speech probability is above
    # `hopeless_no_speech`: beam search decodes that window anyway (its average is then
    # under the bar already, so models.fallback sends it there).
    hopeless_below: float | None = None
    hopeless_no_speech: float = 1.0

    def __post_init__(self) -> None:
        _verify_options(self)


def _verify_options(options: DecodingOptions) -> None:
    if options.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, not {options.max_new_tokens}")
    if options.max_prompt_tokens < 0:
        raise ValueError(f"max_prompt_tokens must not be negative ({options.max_prompt_tokens})")
    if options.max_initial_timestamp < 0:
        raise ValueError("max_initial_timestamp must not be negative")
    if options.loop_max_ngram < 1 or options.loop_min_repeats < 2 or options.loop_min_tokens < 1:
        raise ValueError("the loop guard needs loop_max_ngram >= 1, loop_min_repeats >= 2")
    if options.beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, not {options.beam_size}")
    if options.temperature < 0:
        raise ValueError(f"temperature must not be negative ({options.temperature})")


@dataclass
class DecodedSequence:
    tokens: list[int]  # sampled tokens, text and timestamps, without <|endoftext|>
    token_logprobs: list[float]  # log-probability of each sampled token
    no_speech_prob: float  # probability of <|nospeech|> at the start of the transcript
    ended: bool  # reached <|endoftext|> (False: hit a guard or the length limit)
    repetition_loop: bool  # the loop guard cut a repeated tail
    temperature: float = 0.0  # of the decode that produced it (models.fallback)
    beam_size: int = 1  # beams of the search that produced it (1: greedy or sampled)

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


# ---- logit filters ------------------------------------------------------------------------
class LogitFilter(Protocol):
    def apply(self, logits: Tensor, sampled: list[list[int]], items: list[int]) -> None:
        """Mask `logits` (one row per candidate) in place; `sampled`: each row's tokens so far;
        `items`: the batch item of each row."""


class SuppressTokens:
    """Tokens the model never emits (speaker tags, sound marks, task tokens)."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = torch.tensor(sorted(set(tokens)), dtype=torch.long)

    def apply(self, logits: Tensor, sampled: list[list[int]], items: list[int]) -> None:
        logits[:, self.tokens.to(logits.device)] = NEG_INF


class SuppressBlank:
    """No blank and no end of text as a transcript's first token."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = torch.tensor(sorted(set(tokens)), dtype=torch.long)

    def apply(self, logits: Tensor, sampled: list[list[int]], items: list[int]) -> None:
        first = [k for k, seq in enumerate(sampled) if not seq]
        if first:
            rows = torch.tensor(first, device=logits.device)[:, None]
            logits[rows, self.tokens.to(logits.device)[None, :]] = NEG_INF


# A phrase's boost is the log-odds the whole phrase gains, spread over its tokens by their
# share of its letters: a one-letter first token (" Z" of " Zeebrugge") then gains little
# where it would turn other words into the phrase, and once such a token is out, the rest of
# the phrase is not forced against the audio. No token carries more than half the boost: a
# one-token phrase would gain all of it at one step, wherever it could stand (docs/accuracy.md).
MAX_TOKEN_SHARE = 0.5


def spread_boost(boost: float, letters: list[int]) -> list[float]:
    """Each token's part of a phrase's `boost`, given how many letters each token spells."""
    counts = [max(1, n) for n in letters]
    total = sum(counts)
    return [boost * min(MAX_TOKEN_SHARE, n / total) for n in counts]


class PhraseBias:
    """Hotword boosting: a phrase's next token gains its part of the phrase's boost
    (spread_boost) where the text so far ends with the phrase's first tokens, and its first
    token gains its part anywhere else. Per item: its phrases as token ids (with their
    leading space, as Whisper spells a word) and each token's part of the boost."""

    def __init__(self, phrases: list[list[tuple[list[int], list[float]]]]) -> None:
        self.phrases = phrases

    def apply(self, logits: Tensor, sampled: list[list[int]], items: list[int]) -> None:
        for row, (seq, item) in enumerate(zip(sampled, items)):
            for phrase, parts in self.phrases[item]:
                k = _next_phrase_index(seq, phrase)
                logits[row, phrase[k]] += parts[k]


def _next_phrase_index(seq: list[int], phrase: list[int]) -> int:
    """Where in `phrase` the token that would continue `seq` is (0: its first token)."""
    for m in range(min(len(phrase) - 1, len(seq)), 0, -1):
        if seq[-m:] == phrase[:m]:
            return m
    return 0


class TimestampRules:
    """Whisper's timestamp grammar: pairs, never backwards, the first one early enough, and a
    timestamp whenever all timestamps together outweigh the best text token."""

    def __init__(self, special: SpecialTokens, max_initial_timestamp: float) -> None:
        self.special = special
        self.max_initial = round(max_initial_timestamp / TIME_PRECISION)

    def apply(self, logits: Tensor, sampled: list[list[int]], items: list[int]) -> None:
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
            if not seq:  # a transcript opens with a timestamp, no later than max_initial
                logits[k, :ts_begin] = NEG_INF
                logits[k, ts_begin + self.max_initial + 1 :] = NEG_INF
        # Whisper compares log-probabilities; both share the row's normaliser, so the raw
        # logits compare alike without a softmax over the whole vocabulary
        ts_mass = logits[:, ts_begin:].float().logsumexp(dim=-1)
        best_text = logits[:, :ts_begin].max(dim=-1).values.float()
        force = ts_mass > best_text
        if bool(force.any()):
            logits[force, :ts_begin] = NEG_INF


def logit_filters(
    tokenizer: WhisperTokenizer,
    suppress: list[int],
    suppress_begin: list[int],
    options: DecodingOptions,
) -> tuple[LogitFilter, ...]:
    """The filters `options` asks for, in Whisper's order."""
    filters: list[LogitFilter] = [SuppressTokens(suppress)]
    if options.suppress_blank:
        filters.append(SuppressBlank(suppress_begin))
    if options.timestamps:
        filters.append(TimestampRules(tokenizer.special, options.max_initial_timestamp))
    return tuple(filters)


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


# ---- the token decoder --------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeInputs:
    """What one batch decodes. features: (batch, positions, state) from the encoder;
    audio_positions: real encoder positions per item (None = all are real); cross_kv: the
    decoder's audio keys/values if the caller computed them already (`cross_cache`).

    prompts: earlier text per item (context, not part of the transcript). prefixes: the known
    start of each transcript (a stream's committed words), fed in one forward pass. drafts: a
    guess of the rest (a stream's previous hypothesis); guessed tokens are fed with the newest
    sampled one and kept only as far as greedy decoding picks them too, so the transcript is
    the greedy one whatever the guess ("prompt lookup" decoding), up to the rounding of a
    block against a token at a time: none in fp32, some in bf16 (models.options.Request)."""

    features: Tensor
    audio_positions: Tensor | None
    prompts: list[list[int]]
    prefixes: list[list[int]]
    drafts: list[list[int]]
    cross_kv: list[tuple[Tensor, Tensor]] | None = None

    def audio_mask(self) -> Tensor | None:
        """The cross-attention mask that hides each item's padded encoder positions (None
        when every position is real audio)."""
        x, positions = self.features, self.audio_positions
        if positions is None or not bool((positions < x.shape[1]).any()):
            return None
        return key_padding_mask(positions.to(x.device), x.shape[1], x.dtype)

    def select(self, items: list[int]) -> DecodeInputs:
        """The inputs of some of the batch's items (a fallback decodes only those again)."""
        index = torch.tensor(items, device=self.features.device)
        positions = self.audio_positions
        return DecodeInputs(
            self.features[index],
            None if positions is None else positions[index.to(positions.device)],
            [self.prompts[i] for i in items],
            [self.prefixes[i] for i in items],
            [self.drafts[i] for i in items],
            None if self.cross_kv is None else pick_rows(self.cross_kv, index),
        )


@dataclass
class _Row:
    """An item that is still decoding."""

    result: DecodedSequence
    known: int  # tokens of the result that were given (the prefix), not sampled
    cap: int  # most tokens it may sample
    draft: list[int]  # its guess of the transcript after the prefix
    pointer: int = 0  # where in `draft` the next guess starts
    misses: int = 0  # passes in a row whose guess was rejected at its first token
    pending: int = 0  # the newest sampled token, not yet fed to the model
    position: int = 0  # text position of the newest token fed (or pending)
    index: int = 0  # the item's place in the batch (per-item filters: PhraseBias)

    @property
    def sampled(self) -> int:
        return len(self.result.tokens) - self.known


@dataclass
class _Pass:
    """The loop's state between forward passes."""

    cache: KVCache
    holes: Tensor  # (live items, cache columns): columns that hold no token of the item
    cross_mask: Tensor | None
    live: list[_Row]
    hidden: Tensor  # decoder output of the block just fed
    starts: list[int]  # per item, the column of `hidden` that predicts its next token
    guesses: list[list[int]]  # per item, the draft tokens fed in the block after `starts`
    dtype: torch.dtype  # of the masks (the decoder's activations)
    generator: torch.Generator | None = None  # draws the samples when temperature > 0


@torch.inference_mode()
def greedy_decode(
    decoder: TextDecoder,
    tokenizer: WhisperTokenizer,
    filters: tuple[LogitFilter, ...],
    options: DecodingOptions,
    inputs: DecodeInputs,
) -> list[DecodedSequence]:
    """Decode a batch greedily (or by sampling at options.temperature > 0); `decoder` is the
    text decoder whose kernels to use."""
    results, state = _first_pass(decoder, tokenizer, options, inputs)
    while True:
        used = _verify(decoder, tokenizer, filters, options, state)
        if not _keep_live(state, used):
            return results
        _feed(decoder, tokenizer, state)


def _first_pass(
    decoder: TextDecoder, tokenizer: WhisperTokenizer, options: DecodingOptions, x: DecodeInputs
) -> tuple[list[DecodedSequence], _Pass]:
    """Feed every item's prompt, opening, prefix and first guess in one pass."""
    device, dtype = x.features.device, x.features.dtype
    n_ctx = decoder.positional_embedding.shape[0]
    openings = [initial_tokens(tokenizer, p, options) + f for p, f in zip(x.prompts, x.prefixes)]
    caps = [max(0, min(options.max_new_tokens, n_ctx - len(o))) for o in openings]
    guesses = [_guess(d, 0, 0, c) for d, c in zip(x.drafts, caps)]
    tokens, pads = _left_pad([o + g for o, g in zip(openings, guesses)], tokenizer.special.eot)
    tokens, pads = tokens.to(device), pads.to(device)
    batch, width = tokens.shape
    cross_mask = x.audio_mask()
    holes = torch.arange(width, device=device)[None, :] < pads[:, None]
    mask = block_mask(holes, width, dtype)
    diagonal = torch.arange(width, device=device)  # a padding query would see no key at all
    mask[:, :, diagonal, diagonal] = 0.0  # (a NaN row): let it see itself instead
    positions = (torch.arange(width, device=device)[None, :] - pads[:, None]).clamp(min=0)
    cache = KVCache([], x.cross_kv or decoder.cross_cache(x.features))
    hidden, cache = decoder(tokens, positions, cache, mask, cross_mask)
    ends = [width - len(g) for g in guesses]  # column after each item's prefix
    no_speech = no_speech_probs(decoder, tokenizer, options, hidden, ends, x.prefixes)
    given = prefix_logprobs(decoder, hidden, x.prefixes, ends)
    results = [
        DecodedSequence(
            list(x.prefixes[i]), given[i], no_speech[i], False, False, options.temperature
        )
        for i in range(batch)
    ]
    live = [
        _Row(
            results[i],
            len(x.prefixes[i]),
            caps[i],
            x.drafts[i],
            position=len(openings[i]) - 1,
            index=i,
        )  # fmt: skip
        for i in range(batch)
    ]
    starts = [e - 1 for e in ends]
    generator = None
    if options.temperature > 0:
        generator = torch.Generator(device).manual_seed(options.seed)
    state = _Pass(cache, holes, cross_mask, live, hidden, starts, guesses, dtype, generator)
    return results, state


def no_speech_probs(
    decoder: TextDecoder,
    tokenizer: WhisperTokenizer,
    options: DecodingOptions,
    hidden: Tensor,
    ends: list[int],
    prefixes: list[list[int]],
) -> list[float]:
    """P(<|nospeech|>) at each item's <|startoftranscript|>."""
    opening = len(tokenizer.sot_sequence) + (0 if options.timestamps else 1)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    sot = torch.tensor([e - len(f) - opening for e, f in zip(ends, prefixes)], device=rows.device)
    # logits of one position per item are taken as (batch, 1, state): the int8 CPU head
    # computes those row by row (see precision.RowwiseInt8Linear)
    logits = decoder.logits(hidden[rows, sot][:, None])[:, 0]
    return logits.softmax(dim=-1)[:, tokenizer.special.no_speech].tolist()


def _verify(
    decoder: TextDecoder,
    tokenizer: WhisperTokenizer,
    filters: tuple[LogitFilter, ...],
    options: DecodingOptions,
    state: _Pass,
) -> list[int | None]:
    """Take each live item's greedy picks from the block just fed: the token at its start
    column, and one more for each guessed token that was picked. Returns, per item, how many
    columns of the block hold its tokens from now on (None: it has finished)."""
    items, columns, sampled = [], [], []
    for k, (row, guess) in enumerate(zip(state.live, state.guesses)):
        for j in range(len(guess) + 1):
            items.append(k)
            columns.append(state.starts[k] + j)
            sampled.append(row.result.tokens + guess[:j])
    hidden = state.hidden[items, columns][:, None]
    rows = [state.live[k].index for k in items]
    best, logprobs = _choose(decoder, filters, options, state, hidden, (sampled, rows))
    best_logprobs = logprobs.gather(1, best[:, None])[:, 0].tolist()
    best = best.tolist()
    used: list[int | None] = []
    n = 0
    for k, (row, guess) in enumerate(zip(state.live, state.guesses)):
        picks = list(zip(best[n : n + len(guess) + 1], best_logprobs[n : n + len(guess) + 1]))
        taken = _accept(row, guess, picks, tokenizer, options)
        used.append(None if taken is None else state.starts[k] + taken)
        n += len(guess) + 1
    return used


def _choose(
    decoder: TextDecoder,
    filters: tuple[LogitFilter, ...],
    options: DecodingOptions,
    state: _Pass,
    hidden: Tensor,
    context: tuple[list[list[int]], list[int]],
) -> tuple[Tensor, Tensor]:
    """The token picked at each row of `hidden` (batch, 1, state), after the logit filters
    (`context`: each row's tokens so far and its item), and the log-probabilities. A greedy
    pick may come from the quicker logits (`TextDecoder.pick_logits`) if it was exact there."""
    greedy = options.temperature <= 0 or state.generator is None
    for quick in (True, False) if greedy else (False,):
        logits, exact = decoder.pick_logits(hidden) if quick else (decoder.logits(hidden), None)
        logits = logits[:, 0]
        for logit_filter in filters:
            logit_filter.apply(logits, *context)
        logprobs = torch.log_softmax(logits, dim=-1)
        best = _pick(logits, logprobs, options.temperature, state.generator)
        if exact is None or exact(best):
            break
    return best, logprobs


def _pick(
    logits: Tensor, logprobs: Tensor, temperature: float, generator: torch.Generator | None
) -> Tensor:
    """One token per row: the most likely, or a sample at `temperature` (logprobs stay those
    of the unscaled logits, as Whisper scores a fallback's average log-probability)."""
    if temperature <= 0 or generator is None:
        return logprobs.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _accept(
    row: _Row,
    guess: list[int],
    picks: list[tuple[int, float]],
    tokenizer: WhisperTokenizer,
    options: DecodingOptions,
) -> int | None:
    """Append the model's picks for one item while they confirm its guess; returns how many
    columns of the block stand (None: the item has finished)."""
    for j, (token, logprob) in enumerate(picks):
        if row.sampled >= row.cap or not _take(row.result, token, logprob, tokenizer, options):
            return None
        if row.sampled >= row.cap or _hopeless(row, options):
            return None
        if j < len(guess) and token == guess[j]:
            continue  # the guess is what the model picks: its column stands
        if guess:  # a taken guess restores the full size (see _guess)
            row.misses = row.misses + 1 if j == 0 else 0
        row.pending, row.position = token, row.position + j + 1
        row.pointer = _resync(row.draft, row.pointer + j, token, tokenizer)
        return j + 1
    return None


def _hopeless(row: _Row, options: DecodingOptions) -> bool:
    """Whether the item's average log-probability is sure to end under
    `options.hopeless_below` (more tokens can only add their log-probabilities, none above
    0, and their count). Only the loop guard, cutting a repeated tail back to
    before this point, could have lifted it again: such a window gets its beam search now,
    where it went to the hotter tries."""
    floor, result = options.hopeless_below, row.result
    if floor is None or result.no_speech_prob > options.hopeless_no_speech:
        return False
    return sum(result.token_logprobs) < floor * (row.known + row.cap)


def _keep_live(state: _Pass, used: list[int | None]) -> bool:
    """Hide the rejected columns and drop finished items; False when none is left."""
    block = state.holes.shape[1] - state.hidden.shape[1]
    for k, count in enumerate(used):
        if count is not None:
            state.holes[k, block + count :] = True
    keep = [k for k, count in enumerate(used) if count is not None]
    if keep and len(keep) < len(state.live):
        index = torch.tensor(keep, device=state.holes.device)
        state.cache, state.holes = state.cache.select(index), state.holes[index]
        state.cross_mask = None if state.cross_mask is None else state.cross_mask[index]
        state.live = [state.live[k] for k in keep]
    return bool(keep)


def _feed(decoder: TextDecoder, tokenizer: WhisperTokenizer, state: _Pass) -> None:
    """One forward pass: every item's pending token followed by its next guess."""
    device, dtype = state.holes.device, state.dtype
    n_ctx = decoder.positional_embedding.shape[0]
    guesses = [_guess(r.draft, r.pointer, r.misses, r.cap - r.sampled) for r in state.live]
    span = 1 + max(len(g) for g in guesses)
    fed = [
        [r.pending, *g] + [tokenizer.special.eot] * (span - 1 - len(g))
        for r, g in zip(state.live, guesses)
    ]
    tokens = torch.tensor(fed, dtype=torch.long, device=device)
    positions = torch.tensor([r.position for r in state.live], device=device)[:, None]
    positions = (positions + torch.arange(span, device=device)).clamp(max=n_ctx - 1)
    lengths = torch.tensor([len(g) for g in guesses], device=device)
    padding = torch.arange(span, device=device)[None, :] > lengths[:, None]
    state.holes = torch.cat([state.holes, padding], dim=1)
    mask = block_mask(state.holes, span, dtype)
    state.hidden, state.cache = decoder(tokens, positions, state.cache, mask, state.cross_mask)
    state.starts, state.guesses = [0] * len(state.live), guesses


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
    for ahead in range(RESYNC_LOOKAHEAD):
        if at + ahead < len(draft) and draft[at + ahead] == token:
            return at + ahead + 1
    text = tokenizer.decode([token])
    inserted = bool(text) and not text.startswith(" ") and not any(c.isalnum() for c in text)
    return at if inserted else at + 1


def prefix_logprobs(
    decoder: TextDecoder, hidden: Tensor, prefixes: list[list[int]], ends: list[int]
) -> list[list[float]]:
    """Log-probability of each given prefix token (ending before column `ends`), from the
    position before it."""
    out: list[list[float]] = []
    for i, (prefix, end) in enumerate(zip(prefixes, ends)):
        if not prefix:
            out.append([])
            continue
        start = end - len(prefix)
        logprobs = torch.log_softmax(decoder.logits(hidden[i, start - 1 : end - 1]), -1)
        ids = torch.tensor(prefix, device=hidden.device)[:, None]
        out.append(logprobs.gather(1, ids)[:, 0].tolist())
    return out


def _left_pad(sequences: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in sequences)
    pads = torch.tensor([width - len(s) for s in sequences])
    rows = [[pad] * (width - len(s)) + s for s in sequences]
    return torch.tensor(rows, dtype=torch.long), pads


def block_mask(holes: Tensor, span: int, dtype: torch.dtype) -> Tensor:
    """Additive self-attention mask (batch, 1, span, columns) for a block of `span` new
    tokens at the end of the cache: hole columns are hidden, and the block is causal."""
    columns = holes.shape[1]
    mask = torch.zeros((holes.shape[0], 1, span, columns), dtype=dtype, device=holes.device)
    mask.masked_fill_(holes[:, None, None, :], NEG_INF)
    if span > 1:
        causal = torch.full((span, span), NEG_INF, dtype=dtype, device=holes.device).triu(1)
        mask[:, :, :, columns - span :] += causal
    return mask
