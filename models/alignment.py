"""Word timestamps from the cross-attention of Whisper's alignment heads.

As Whisper does it: run the decoder once over the whole transcript, take the attention
probabilities of the heads known to follow time (listed in config.json), normalise each head
over tokens, median-filter over time, average the heads, and find the monotonic path through
the token x time matrix with dynamic time warping. A word starts where the path enters its
first token and ends where the next word starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .audio import TOKENS_PER_SECOND
from .tokenizer import WhisperTokenizer
from .whisper import TextDecoder, key_padding_mask

MEDIAN_FILTER_WIDTH = 7  # encoder positions (140 ms), Whisper's choice


@dataclass(frozen=True)
class Word:
    word: str  # as written, without the leading space of its tokens
    start: float  # seconds from the start of the window
    end: float
    probability: float  # mean probability of the word's tokens


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment path through `cost` (rows x cols), lowest total cost.

    Filled one row at a time: within a row, t[j] = c[j] + min(a[j], t[j - 1]) with a[j] the
    best of the two cells above, which unrolls to t[j] = S[j] + min over k <= j of
    (a[k] - S[k - 1]) with S the running sum of the row's costs: a cumulative minimum. So
    numpy does whole rows (tens of them) instead of Python stepping through every diagonal
    (hundreds) or cell. Moves on ties are chosen as in Whisper's own DTW.
    """
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf, dtype=np.float64)
    trace = np.full((rows + 1, cols + 1), -1, dtype=np.int8)
    total[0, 0] = 0.0
    for i in range(1, rows + 1):
        above = np.minimum(total[i - 1, :-1], total[i - 1, 1:])  # a[j], j = 1..cols
        running = np.cumsum(cost[i - 1], dtype=np.float64)  # S[j]
        shifted = np.concatenate(([0.0], running[:-1]))  # S[j - 1]
        total[i, 1:] = running + np.minimum.accumulate(above - shifted)
        c0, c1, c2 = total[i - 1, :-1], total[i - 1, 1:], total[i, :-1]
        take0 = (c0 < c1) & (c0 < c2)
        take1 = ~take0 & (c1 < c0) & (c1 < c2)
        trace[i, 1:] = np.where(take0, 0, np.where(take1, 1, 2))
    trace[0, :], trace[:, 0] = 2, 1
    i, j = rows, cols
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    array = np.array(path)
    return array[:, 0], array[:, 1]


# A sorting network for 7 values (16 compare-exchanges; checked on every 0/1 input in the
# tests): over whole shifted copies of the rows it takes a tenth of the time of
# torch.median over unfolded windows, which was a quarter of the alignment's time.
SORT7 = (
    (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5),
    (3, 4), (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6),
)  # fmt: skip


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over the last dimension with reflected edges."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])  # reflect padding wants (N, C, L)
    padded = F.pad(flat, (pad, pad), mode="reflect")[:, 0]
    if width != 7:
        return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)
    values = [padded[:, i : i + shape[-1]] for i in range(width)]
    for a, b in SORT7:
        values[a], values[b] = (
            torch.minimum(values[a], values[b]),
            torch.maximum(values[a], values[b]),
        )
    return values[pad].reshape(shape)


@torch.inference_mode()
def align_batch(
    decoder: TextDecoder,
    tokenizer: WhisperTokenizer,
    heads: list[tuple[int, int]],
    cross_kv: list[tuple[Tensor, Tensor]],
    spans: Tensor,
    items: list[tuple[list[int], list[float], int]],
) -> list[list[Word]]:
    """Words with times for every window of a batch, from ONE decoder pass over all of them.

    cross_kv: per decoder layer, the batch's audio keys/values (batch, head, P, dim), as
    decoding computed them; spans: encoder positions per item (the rest is padding, masked);
    items: (text tokens, their probabilities, positions of real audio) per window; alignment
    stays inside the real audio. Transcripts are padded at their end, which the causal
    self-attention keeps from touching the real tokens, so each window aligns as it would alone.
    """
    chosen = [i for i, (tokens, _, _) in enumerate(items) if tokens]
    result: list[list[Word]] = [[] for _ in items]
    if not chosen:
        return result
    special, sot = tokenizer.special, tokenizer.sot_sequence
    sequences = [[*sot, special.no_timestamps, *items[i][0], special.eot] for i in chosen]
    device = cross_kv[0][0].device
    tokens = torch.full((len(chosen), max(map(len, sequences))), special.eot, device=device)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = torch.tensor(sequence, device=device)
    if len(chosen) < len(items):
        index = torch.tensor(chosen, device=device)
        cross_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cross_kv]
        spans = spans[chosen]
    total = cross_kv[0][0].shape[2]
    mask = None
    if bool((spans < total).any()):
        mask = key_padding_mask(spans.to(device), total, cross_kv[0][0].dtype)
    by_head = decoder.cross_attention_weights(tokens, cross_kv, mask, heads)
    for row, i in enumerate(chosen):
        text_tokens, probs, positions = items[i]
        length = len(sequences[row])
        weights = torch.stack([by_head[head][row, :length, :positions] for head in heads])
        result[i] = _words(tokenizer, weights, len(sot), text_tokens, probs, positions)
    return result


def _words(
    tokenizer: WhisperTokenizer,
    weights: Tensor,
    sot_length: int,
    text_tokens: list[int],
    token_probs: list[float],
    positions: int,
) -> list[Word]:
    """weights: (heads, tokens, positions) cross-attention of the alignment heads."""
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / std.clamp(min=1e-8), MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(dim=0)[sot_length:-1]  # rows: <|notimestamps|>, text tokens
    text_index, time_index = dtw(-matrix.double().cpu().numpy())
    jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
    jump_times = time_index[jumps] / TOKENS_PER_SECOND
    words = tokenizer.split_to_words(text_tokens)
    result = []
    boundary = 0
    for text, ids in words:
        nxt = boundary + len(ids)
        start = float(jump_times[boundary])
        end = float(jump_times[nxt]) if nxt < len(jump_times) else positions / TOKENS_PER_SECOND
        probability = float(np.mean(token_probs[boundary:nxt]))
        if text.strip():
            result.append(Word(text.strip(), start, max(start, end), probability))
        boundary = nxt
    return _clamp_long_edges(result)


SENTENCE_END = ".!?。！？"


def _clamp_long_edges(words: list[Word]) -> list[Word]:
    """DTW stretches words over silence: the first word over leading silence, the word before
    a pause over the pause. Cut such words to twice the median word length, as Whisper's own
    heuristic does: at the start, at the end, and around sentence ends."""
    durations = sorted(w.end - w.start for w in words if w.end > w.start)
    if not durations:
        return words
    longest = 2 * min(0.7, durations[len(durations) // 2])
    for i, word in enumerate(words):
        if word.end - word.start <= longest:
            continue
        before_pause = i == len(words) - 1 or word.word.rstrip()[-1:] in SENTENCE_END
        after_pause = i == 0 or words[i - 1].word.rstrip()[-1:] in SENTENCE_END
        if before_pause:
            words[i] = Word(word.word, word.start, word.start + longest, word.probability)
        elif after_pause:
            words[i] = Word(word.word, word.end - longest, word.end, word.probability)
    return words
