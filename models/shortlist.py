"""The bf16 decoder's output projection on CPU, read at int8 where its result is not used.

Each decoded token multiplies its hidden state by the 51864 x 384 embedding matrix: 40 MB of
bf16 read per token, memory-bound (2.3 ms of a ~6.5 ms step on 2 EPYC cores). Greedy and beam
decoding look at the best few text tokens and at the special and timestamp tokens (the
timestamp rules, no-speech probability, end of text); the other logits only enter the
normalisation. So the whole vocabulary is scored from int8 rows (20 MB, 0.6 ms), the best
SHORTLIST text tokens and every special token are scored again from the bf16 rows exactly as
the full bf16 product scores them, and their values replace the int8 ones. Only a greedy
step's pick uses it, and only when the token picked (after the logit filters) is one of
those: else the step is scored again in full. Everything else that reads logits (the
log-probabilities of given prefix tokens, the no-speech probability, sampling at a fallback
temperature) gets the full bf16 product (packed for oneDNN: models.precision). So do steps
of more than MAX_ROWS rows (a beam search's beams, a batch of many streams): the int8
kernel's time doubles from four rows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SHORTLIST = 16  # text tokens scored exactly per row (an int8 logit is off by up to ~1)
# Whisper's byte-pair vocabulary (GPT-2's) ends here; special and timestamp tokens follow
ENGLISH_TEXT_TOKENS = 50256
MULTILINGUAL_TEXT_TOKENS = 50257
MULTILINGUAL_VOCAB = 51865
QUANTIZE_ROWS = 4096
# Rows up to which the int8 reading pays. Beyond, `_weight_int8pack_mm` leaves its fast path:
# measured on 2 Xeon cores (AVX512-BF16) with the caches cold, as between decoder steps, the
# whole pick took 1.5 ms for 1-3 rows, 3.2 for 4, 6.0 for 5 and 11.8 for 16, the full bf16
# product 1.6, 2.9, 3.2 and 7.1 ms (docs/accuracy.md).
MAX_ROWS = 3


class ShortlistProjection(nn.Module):
    def __init__(self, weight: Tensor) -> None:
        """`weight`: the bf16 embedding matrix (vocabulary, state), shared, not copied."""
        super().__init__()
        vocabulary = weight.shape[0]
        multilingual = vocabulary >= MULTILINGUAL_VOCAB
        self.text_tokens = MULTILINGUAL_TEXT_TOKENS if multilingual else ENGLISH_TEXT_TOKENS
        # a block of rows at a time: no fp32 copy of the whole matrix (80 MB at start-up)
        qweight = torch.empty(weight.shape, dtype=torch.int8)
        scale = torch.empty(vocabulary, dtype=torch.bfloat16)
        for start in range(0, vocabulary, QUANTIZE_ROWS):
            rows = weight[start : start + QUANTIZE_ROWS].float()
            step = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
            qweight[start : start + QUANTIZE_ROWS] = torch.round(rows / step)
            scale[start : start + QUANTIZE_ROWS] = step[:, 0]
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.weight = weight

    def serves(self, x: Tensor) -> bool:
        """Whether a step of these states is quicker read here than as the full product."""
        return x.numel() // x.shape[-1] <= MAX_ROWS

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits to pick the most likely token from, and per row the text tokens that are
        exact in them (special and timestamp tokens always are): see `exact`."""
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        logits = torch._weight_int8pack_mm(rows, self.qweight, self.scale).float()
        text = self.text_tokens
        best = logits[:, :text].topk(SHORTLIST, dim=-1).indices
        picked = (self.weight[best] @ rows[:, :, None])[:, :, 0]  # (rows, SHORTLIST)
        logits.scatter_(1, best, picked.float())
        logits[:, text:] = (rows @ self.weight[text:].T).float()
        return logits.reshape(*x.shape[:-1], -1), best

    def exact(self, tokens: Tensor, best: Tensor) -> bool:
        """Whether every row's token (one per row of the input) had its exact logit."""
        listed = (best == tokens[:, None]).any(dim=1)
        return bool((listed | (tokens >= self.text_tokens)).all())


def shortlist_supported() -> bool:
    """Whether this torch build has the int8 weight-only CPU kernel."""
    try:
        torch._weight_int8pack_mm(
            torch.ones(1, 32, dtype=torch.bfloat16),
            torch.ones(8, 32, dtype=torch.int8),
            torch.ones(8, dtype=torch.bfloat16),
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True
