"""Whisper encoder-decoder in torch, batched, with a key/value cache.

Parameter names follow openai-whisper's state dict, so its checkpoints load as they are; the
other formats are renamed into these names by `checkpoints.py`.

Batching: items of one batch may have different audio lengths (a shorter encoder span) and
different prompt lengths. Audio is right-padded and masked; prompts are left-padded and masked,
so every item sees exactly what it would see alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelDimensions:
    n_mels: int  # mel bins of the input features
    n_audio_ctx: int  # encoder positions in a 30 s window (1500)
    n_audio_state: int  # encoder width
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int
    n_text_head: int
    n_text_layer: int


@dataclass
class KVCache:
    """Per-layer keys/values of the decoder. Self-attention grows by one position a step; the
    cross-attention entries are computed once per encoder output."""

    self_kv: list[tuple[Tensor, Tensor]]
    cross_kv: list[tuple[Tensor, Tensor]]

    def select(self, index: Tensor) -> KVCache:
        """Keep only the batch items in `index` (finished items leave the batch)."""
        return KVCache(pick_rows(self.self_kv, index), pick_rows(self.cross_kv, index))


def pick_rows(pairs: list[tuple[Tensor, Tensor]], index: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Each layer's keys and values at the batch rows `index` (in that order, repeats
    allowed). `index_select`, not `k[index]`: the same values, but advanced indexing takes
    3-4x as long on CPU (a beam step reorders eight such tensors)."""
    return [(k.index_select(0, index), v.index_select(0, index)) for k, v in pairs]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """The encoder's fixed sinusoidal positions, shape (length, channels)."""
    log_increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-log_increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def attention_dtype(x: Tensor) -> torch.dtype:
    """The dtype `attention` computes in for inputs like `x`: fp32 for bf16 on CPU."""
    return torch.float32 if x.dtype == torch.bfloat16 and x.device.type == "cpu" else x.dtype


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Scaled dot-product attention. On CPU a bf16 call runs in fp32 and is rounded back:
    torch's CPU kernel takes ~7x as long in bf16 as in fp32 for a decoder step (one query
    over 1500 audio keys: 0.51 against 0.07 ms on 2 EPYC cores), and as long for the
    encoder's 1500 queries. Keys and values already in fp32 (the decoder's audio keys,
    `TextDecoder.cross_cache`) are used as they are."""
    wide = attention_dtype(q) if k.dtype == q.dtype else k.dtype
    if wide == q.dtype:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    mask = None if mask is None else mask.to(wide)
    out = F.scaled_dot_product_attention(q.to(wide), k.to(wide), v.to(wide), attn_mask=mask)
    return out.to(q.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)
        # query, key and value in one product, where a precision mode fuses them
        # (models.precision: one call instead of three for a decoder step's self-attention)
        self.fused_qkv: nn.Module | None = None

    def split(self, x: Tensor) -> Tensor:
        """(batch, time, state) -> (batch, head, time, state/head)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, -1).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(self.key(x)), self.split(self.value(x))

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's queries, keys and values of `x`, each split into heads."""
        if self.fused_qkv is None:
            return (self.split(self.query(x)), *self.project_kv(x))
        q, k, v = self.fused_qkv(x).chunk(3, dim=-1)
        return self.split(q), self.split(k), self.split(v)

    def attend(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        return self.attend_queries(self.split(self.query(x)), kv, mask)

    def attend_queries(self, q: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        """`attend` with the queries projected and split already."""
        if kv[0].shape[0] == 1 < q.shape[0] and q.shape[2] == 1:
            # one window's beams (models.beam) over its one copy of the audio keys: their
            # queries go in one call, which reads the keys once
            out = attention(q.transpose(0, 2), kv[0], kv[1], mask).transpose(0, 2)
        else:
            out = attention(q, kv[0], kv[1], mask)
        b, _, t, _ = out.shape
        return self.out(out.transpose(1, 2).reshape(b, t, -1))

    def weights(
        self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None, heads: list[int]
    ) -> Tensor:
        """Attention probabilities (batch, len(heads), query, key) of the given heads, for
        word alignment."""
        q = self.split(self.query(x))[:, heads].to(kv[0].dtype)
        scores = q @ kv[0][:, heads].transpose(-1, -2) / (q.shape[-1] ** 0.5)
        if mask is not None:
            scores = scores + mask
        return scores.float().softmax(dim=-1)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = nn.LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(
            nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state)
        )
        self.mlp_ln = nn.LayerNorm(n_state)

    def encode(self, x: Tensor, mask: Tensor | None) -> Tensor:
        h = self.attn_ln(x)
        x = x + self.attn.attend(h, self.attn.project_kv(h), mask)
        return x + self.mlp(self.mlp_ln(x))

    def decode(
        self,
        x: Tensor,
        past: tuple[Tensor, Tensor] | None,
        cross_kv: tuple[Tensor, Tensor],
        self_mask: Tensor | None,
        cross_mask: Tensor | None,
        heads: list[int] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor | None]:
        """One decoder layer. Returns its output, its self-attention keys/values (past + new)
        and, for `heads`, their cross-attention probabilities (word alignment)."""
        h = self.attn_ln(x)
        q, k, v = self.attn.project_qkv(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + self.attn.attend_queries(q, (k, v), self_mask)
        h = self.cross_attn_ln(x)
        weights = self.cross_attn.weights(h, cross_kv, cross_mask, heads) if heads else None
        x = x + self.cross_attn.attend(h, cross_kv, cross_mask)
        return x + self.mlp(self.mlp_ln(x)), (k, v), weights


def _dense(x: Tensor, dtype: torch.dtype) -> Tensor:
    # `to` hands back x itself, strides and all, when the dtype already matches (fp32)
    return x.to(dtype, memory_format=torch.contiguous_format).contiguous()


def key_padding_mask(valid: Tensor, total: int, dtype: torch.dtype) -> Tensor:
    """Additive mask (batch, 1, 1, total) that hides positions at or past `valid` per item."""
    positions = torch.arange(total, device=valid.device)
    hidden = positions[None, :] >= valid[:, None]
    mask = torch.zeros(hidden.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill(hidden, float("-inf"))[:, None, None, :]


class AudioEncoder(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        state = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(state, state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, state))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(state, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = nn.LayerNorm(state)

    def forward(self, mel: Tensor, frames: Tensor | None = None) -> Tensor:
        """mel: (batch, n_mels, T) with T <= 3000; frames: real mel frames per item (None = all).

        Returns (batch, T/2, state). Padded positions are zeroed between the convolutions and
        masked in attention, so a padded item encodes exactly as it would alone.
        """
        x = F.gelu(self.conv1(mel))
        if frames is not None:
            keep = torch.arange(x.shape[-1], device=x.device)[None, :] < frames[:, None]
            x = x * keep[:, None, :].to(x.dtype)
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        mask = None
        if frames is not None and bool((frames < mel.shape[-1]).any()):
            mask = key_padding_mask((frames + 1) // 2, x.shape[1], x.dtype)
        for block in self.blocks:
            x = block.encode(x, mask)
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        state = dims.n_text_state
        self.token_embedding = nn.Embedding(dims.n_vocab, state)
        self.positional_embedding = nn.Parameter(torch.empty(dims.n_text_ctx, state))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(state, dims.n_text_head, cross_attention=True)
            for _ in range(dims.n_text_layer)
        )
        self.ln = nn.LayerNorm(state)
        # The output projection shares the embedding matrix; precision modes may replace it
        # with a faster (e.g. int8) copy without touching the embedding lookup.
        self.logits_head: nn.Module | None = None
        # A quicker form of the output projection for a greedy step's pick (models.shortlist):
        # (logits, what is exact in them) from its call, an `exact(tokens, that)` check, and
        # `serves(states)`: whether it is the quicker for a step of those states.
        self.pick_head: nn.Module | None = None

    def cross_cache(self, audio: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the audio keys and values every decoder step attends to, each head's
        contiguous: read from the projection's (time, head) layout, a step's attention to
        them took twice as long on CPU (0.45 against 0.23 ms a layer, one query over 1500
        keys, when the four layers' keys are not in cache). On CPU, bf16 ones are kept in
        fp32 (`attention` computes in fp32 there): widened at every step, each step's copies
        of them (2.3 MB a layer and batch item) cost more than the attention itself, up to 7
        ms a layer for four items when glibc maps them afresh."""
        audio = audio.to(self.ln.weight.dtype)  # the encoder may run at another precision
        kv = [block.cross_attn.project_kv(audio) for block in self.blocks]
        dtype = attention_dtype(audio)
        return [(_dense(k, dtype), _dense(v, dtype)) for k, v in kv]

    def logits(self, x: Tensor) -> Tensor:
        if self.logits_head is not None:
            return self.logits_head(x).float()
        return (x @ self.token_embedding.weight.to(x.dtype).T).float()

    def pick_logits(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], bool]]:
        """Logits to pick the most likely next token from, and a check that the tokens picked
        (one per row of `x`) had exact logits there; where it fails, use `logits`. The output
        projection may have a quicker form (`pick_head`) for steps of few rows."""
        head = self.pick_head
        if head is None or not head.serves(x):
            return self.logits(x), lambda tokens: True
        logits, best = head(x)
        return logits, lambda tokens: head.exact(tokens, best)

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        cache: KVCache,
        self_mask: Tensor | None,
        cross_mask: Tensor | None,
    ) -> tuple[Tensor, KVCache]:
        """tokens, positions: (batch, n_new). self_mask covers past + new keys. Returns the
        final hidden states (batch, n_new, state), ready for `logits`, and the extended cache."""
        x = self.token_embedding(tokens) + self.positional_embedding[positions]
        x = x.to(self.ln.weight.dtype)
        new_self = []
        for i, block in enumerate(self.blocks):
            past = cache.self_kv[i] if cache.self_kv else None
            x, kv, _ = block.decode(x, past, cache.cross_kv[i], self_mask, cross_mask)
            new_self.append(kv)
        return self.ln(x), KVCache(new_self, cache.cross_kv)

    def cross_attention_weights(
        self,
        tokens: Tensor,
        cross_kv: list[tuple[Tensor, Tensor]],
        cross_mask: Tensor | None,
        heads: list[tuple[int, int]],
    ) -> dict[tuple[int, int], Tensor]:
        """Run the sequence once and return the cross-attention probabilities (batch, tokens,
        frames) of the given (layer, head) pairs; used by word alignment. cross_kv: the
        per-layer audio keys/values that decoding already computed (`cross_cache`). Layers
        after the last one asked for are not run."""
        t = tokens.shape[1]
        positions = torch.arange(t, device=tokens.device)[None, :].expand_as(tokens)
        x = self.token_embedding(tokens) + self.positional_embedding[positions]
        x = x.to(self.ln.weight.dtype)
        causal = torch.full((t, t), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        last = max(layer for layer, _ in heads)
        weights = {}
        for index, (block, audio_kv) in enumerate(zip(self.blocks[: last + 1], cross_kv)):
            wanted = [head for layer, head in heads if layer == index]
            x, _, probs = block.decode(x, None, audio_kv, causal, cross_mask, wanted)
            weights.update({(index, head): probs[:, k] for k, head in enumerate(wanted)})
        return weights


class Whisper(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)
        # A copy of `decoder` over the same weights whose kernels compute each batch item as
        # it would be computed alone (precision.py sets it where the fast kernels do not);
        # TranscribeOptions.batch_invariant picks it.
        self.exact_decoder: TextDecoder | None = None

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865
