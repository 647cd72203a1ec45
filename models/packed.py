"""The bf16 decoder's Linear layers on CPU with their weights packed once for oneDNN.

A decoder step multiplies one token's state by each of its 32 weight matrices. torch's bf16
`F.linear` on CPU calls oneDNN with the weight in torch's plain layout, and oneDNN lays it out
for its kernel again on every call: that took as long as the product itself (384 x 1536, one
row: 55-60 against 27-30 us on 2 EPYC cores). Packed once at load (the ops that torch's own
CPU compiler uses for frozen weights), the same kernel reads them as they are: the results
are bit for bit those of `F.linear` on the same (contiguous) input, checked at load. The
output projection (51864 x 384, the embedding matrix) gains most: 5 rows (a beam search's
step) 1.2 against 3.0-3.6 ms with the caches cold, one row 1.1-1.3 against 2.5-3.2 ms.

The fp32 decoder (`auto` on a CPU without fast bf16, or `--precision fp32`) is packed too:
torch's fp32 `F.linear` calls MKL, whose product of one row with the 51864 x 384 output
projection took 8.2 ms with the caches cold on 2 EPYC cores (5 rows: 13.0), 3.9 ms packed
(5.4). In fp32 the packed product is not bit for bit MKL's (another order of summation,
~1e-5 apart): the hard fixtures decode to the same text either way (docs/accuracy.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACKING_ROWS_HINT = 1  # rows of input the packed layout is chosen for: a decoder step's one


class PackedLinear(nn.Module):
    """nn.Linear over a weight packed for oneDNN, in the weight's dtype: bf16
    (`packed_linear_supported`) or fp32 (`packed_fp32_supported`)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKING_ROWS_HINT)
        # opaque oneDNN tensors cannot be copied or saved: not in the state dict
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach(), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16) -> PackedLinear:
        bias = None if linear.bias is None else linear.bias.data.to(dtype)
        return cls(linear.weight.data.to(dtype), bias)

    def forward(self, x: Tensor) -> Tensor:
        # the packed kernel reads its input as dense rows; F.linear on a strided view takes
        # another kernel, so a dense copy is what F.linear on that copy would compute
        return torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), self.packed, self.bias, "none", [], ""
        )

    def extra_repr(self) -> str:
        dtype = str(self.packed.dtype).removeprefix("torch.")
        return f"in_features={self.in_features}, out_features={self.out_features}, {dtype} packed"


@functools.cache
def packed_linear_supported() -> bool:
    """Whether this torch build and CPU run oneDNN's bf16 products and the packed form gives
    `F.linear`'s very results (else the decoder keeps nn.Linear)."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    return _packed_matches_f_linear(torch.bfloat16, torch.equal)


@functools.cache
def packed_fp32_supported() -> bool:
    """Whether this torch build runs oneDNN's packed fp32 products, to within rounding of
    `F.linear` (else the fp32 decoder keeps nn.Linear)."""
    if not torch.backends.mkldnn.is_available():
        return False
    return _packed_matches_f_linear(
        torch.float32, lambda a, b: torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    )


def _packed_matches_f_linear(dtype: torch.dtype, same: Callable[[Tensor, Tensor], bool]) -> bool:
    """A small packed product in `dtype` runs here, and `same` holds between it and
    `F.linear`'s."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator).to(dtype)
    bias = torch.randn(96, generator=generator).to(dtype)
    x = torch.randn(2, 3, 64, generator=generator).to(dtype)
    try:
        with torch.inference_mode():
            packed = PackedLinear(weight, bias)(x)
    except RuntimeError:  # an op missing from this build
        return False
    return same(packed, F.linear(x, weight, bias))
