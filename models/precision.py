"""Numeric precision per device: fp32, fp16, bf16, int8 — and `auto`, chosen by measurement.

What pays off was measured, not assumed (docs/benchmarks.md has the numbers):
- The decoder is memory-bound: each token reads the 51864 x 384 output projection. int8
  weights cut that step ~3x on x86 CPUs, so `int8` quantizes the decoder's Linear layers, the
  output projection and the embedding table (int8 rows + scales). Interims use dynamic
  activation quantization (fastest); finals use a twin decoder with row-by-row kernels over
  the same int8 weights (`Whisper.exact_decoder`, picked by TranscribeOptions.batch_invariant),
  so a final does not depend on the other items of its batch.
- The encoder is compute-bound over hundreds of frames. int8 there is slower than fp32 on
  CPUs without VNNI and only slightly faster with it; bf16 is 2x faster where the CPU has
  native bf16 (AMX/AVX512-BF16) and much slower elsewhere. So `auto` times the candidates on
  this machine at start-up and keeps the fastest encoder and decoder variants, fp32 unless
  another is clearly quicker (MIN_GAIN: the same pick on every load).
- `auto` may pick only variants whose pooled WER on the noisy fixtures (tests/data/hard) is
  within 0.5 points of fp32 (docs/accuracy.md; measured once by benchmarks/accuracy.py, not
  at start-up): the bf16 encoder is (-0.4), and so is the bf16 decoder (-0.8 with the bf16
  encoder); the int8 encoder (+3.4) and the int8 decoder (+0.65 with the fp32 encoder, +1.0
  with bf16) are not, so `auto` times an fp32 and a bf16 decoder step and keeps the faster
  (bf16 only if clearly so).
  `int8` stays for whoever asks for it.
- The bf16 decoder on CPU scores a greedy step's pick from the output projection read at
  int8 and made exact for the best 16 text tokens and every special token (models.shortlist):
  the picks are those of the full bf16 product, at a quarter of its memory traffic; its
  audio keys and values are kept in fp32 (TextDecoder.cross_cache), and its Linear weights
  are packed once for oneDNN (models.packed: the same results, a decoder step ~9 % sooner),
  the output projection's too (+40 MB: what the shortlist does not serve, a beam search's
  step or a draft's block, 1.2 ms instead of 3-3.6 ms for 5 rows).
- The fp32 CPU decoder's Linear weights and output projection are packed for oneDNN as well
  (models.packed): MKL's fp32 product of a step's row with the output projection took 2x
  as long as the packed one, and a beam step's 5 rows 2.4x; the fp32 decoder is what `auto`
  keeps on a CPU without fast bf16.
- On CUDA: fp16 everywhere by default; `int8` is weight-only (int8 weights, fp16 compute).
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .memory import trim_heap
from .packed import PackedLinear, packed_fp32_supported, packed_linear_supported
from .shortlist import ShortlistProjection, shortlist_supported
from .whisper import KVCache, MultiHeadAttention, TextDecoder, Whisper

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CALIBRATION_FRAMES = 600  # mel frames (6 s) of synthetic input for the start-up timing
ENCODER_REPEATS = 5  # encoder calls each candidate is timed over, in turns
# A decoder step takes a few ms, so one slow moment of a busy machine could turn the pick (the
# bf16 step measured 0.50-1.04x the fp32 one over eight loads here, three timings each): the
# candidates are timed in turns, this many times each, and the medians compared.
DECODER_REPEATS = 15
# A variant replaces fp32 only when its median is this much quicker. Within it, timings cross
# from one load to the next: on an AVX512-BF16 Xeon without AMX a bf16 decoder step took
# 0.75-0.96 of the fp32 one over four loads (`_decoder_probe`), while real decoding took as
# long either way (greedy and beams over 40 noisy and clean files: 127 against 126 s), and a
# pick that flips with the load changes the text the same audio gets after a restart
# (docs/accuracy.md). Where a variant pays (the bf16 encoder on AMX: ~2x), it still wins.
MIN_GAIN = 0.3
# What `auto` may choose from: those within 0.5 WER points of fp32 on noisy audio (see above)
AUTO_ENCODERS = ("fp32", "bf16")
AUTO_DECODERS = ("fp32", "bf16")  # "int8" too, were it within the bar: _pick_decoder times it
_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionPlan:
    device: str  # "cpu" or "cuda[:n]"
    precision: str  # the mode asked for, after `auto` was resolved: fp32|fp16|bf16|int8|mixed
    encoder: str  # fp32 | fp16 | bf16 | int8
    decoder: str  # fp32 | fp16 | bf16 | int8
    calibration_ms: tuple[tuple[str, float], ...] = ()  # what `auto` measured

    @property
    def encoder_dtype(self) -> torch.dtype:
        return _DTYPES.get(self.encoder, torch.float32)

    @property
    def decoder_dtype(self) -> torch.dtype:
        if self.decoder == "int8":
            return torch.float16 if self.device.startswith("cuda") else torch.float32
        return _DTYPES[self.decoder]

    @property
    def dtype(self) -> torch.dtype:
        """Activation dtype fed to the encoder."""
        if self.encoder == "int8":
            return torch.float16 if self.device.startswith("cuda") else torch.float32
        return self.encoder_dtype

    def describe(self) -> str:
        if self.encoder == self.decoder:
            return self.encoder
        return f"encoder {self.encoder}, decoder {self.decoder}"


def resolve_device(device: str) -> str:
    if device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda[:N])")
    return device


def choose_precision(model: Whisper, device: str, precision: str) -> PrecisionPlan:
    """Resolve `device` and `precision` (`auto` measures on CPU) into a plan."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (choose one of {', '.join(PRECISIONS)})")
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    if precision == "auto":
        return PrecisionPlan(device, "fp16", "fp16", "fp16") if cuda else _calibrate(model)
    if not cuda and precision == "fp16":
        raise ValueError("fp16 is for CUDA; on CPU use fp32, bf16, int8 or auto")
    if precision == "int8":
        return PrecisionPlan(device, "int8", "fp16" if cuda else "fp32", "int8")
    return PrecisionPlan(device, precision, precision, precision)


@torch.inference_mode()
def _calibrate(model: Whisper) -> PrecisionPlan:
    """Time the encoder (AUTO_ENCODERS) and decoder steps (AUTO_DECODERS) on this CPU.

    The fp32 candidates are the model's own modules (loaded in fp32; the decoder packed in
    place, as it would run); the others are converted copies. The winners are installed
    into `model` right away, so that apply_precision does not convert them a second time
    (the int8 decoder's output projection takes ~0.3 s to quantize and pack)."""
    timings = _pick_encoder(model)
    if len(AUTO_DECODERS) > 1:
        timings.update(_pick_decoder(model))
    encoder = choose("encoder", AUTO_ENCODERS, timings)
    decoder = choose("decoder", AUTO_DECODERS, timings)
    name = encoder if encoder == decoder else "mixed"
    plan = PrecisionPlan("cpu", name, encoder, decoder, tuple(sorted(timings.items())))
    _LOGGER.info("auto precision: %s (measured %s)", plan.describe(), timings)
    return plan


def choose(part: str, modes: tuple[str, ...], timings: dict[str, float]) -> str:
    """The mode of `part` ("encoder", "decoder") that `auto` keeps: fp32, unless another of
    `modes` took at least MIN_GAIN less time (`timings["{part}_{mode}"]`, ms; the quickest
    of those). Without fp32 among `modes` (or with one mode only), the quickest of them."""
    if "fp32" not in modes or len(modes) == 1:
        return min(modes, key=lambda m: timings.get(f"{part}_{m}", 0.0))
    bar = timings[f"{part}_fp32"] * (1 - MIN_GAIN)
    quicker = [m for m in modes if timings.get(f"{part}_{m}", bar) < bar]
    return min(quicker, key=lambda m: timings[f"{part}_{m}"]) if quicker else "fp32"


def _pick_encoder(model: Whisper) -> dict[str, float]:
    """Time each of AUTO_ENCODERS on synthetic input, in turns as the decoders are, and
    install the one `choose` keeps. bf16 takes ~0.6 of fp32's time on an AVX512-BF16 CPU,
    near MIN_GAIN's 0.7: timed one after the other, three calls each, a moment's load kept
    fp32 in one load of twenty on a quiet 2-vCPU EPYC. (All candidates are alive at once:
    AUTO_ENCODERS holds one besides fp32.)"""
    mel = torch.randn(1, model.dims.n_mels, CALIBRATION_FRAMES)
    candidates = {"fp32": model.encoder}
    for mode in AUTO_ENCODERS[1:]:
        candidates[mode] = copy.deepcopy(model.encoder)
        _convert_encoder(candidates[mode], mode, "cpu")
    runs = {
        mode: lambda e=encoder, d=_encoder_input_dtype(mode): e(mel.to(d))
        for mode, encoder in candidates.items()
    }
    timings = {f"encoder_{m}": ms for m, ms in _time_in_turns(runs, ENCODER_REPEATS).items()}
    model.encoder = candidates[choose("encoder", tuple(candidates), timings)]
    del candidates, runs
    _release_freed_heap()  # the losing candidates and activations: lower peak from here on
    return timings


def _encoder_input_dtype(mode: str) -> torch.dtype:
    return torch.bfloat16 if mode == "bf16" else torch.float32


def _pick_decoder(model: Whisper) -> dict[str, float]:
    """Time decoder steps (`_decoder_probe`) in fp32 and each other AUTO_DECODERS mode;
    install the one `choose` keeps."""
    audio = torch.randn(1, model.dims.n_audio_ctx, model.dims.n_audio_state)
    candidates = {"fp32": (model.decoder, model.exact_decoder)}
    for mode in AUTO_DECODERS[1:]:
        # share the 80 MB embedding with the model instead of copying it: conversion reads
        # it and never writes it (a copy pushed the start-up peak RSS ~80 MB higher); a new
        # Parameter on the same storage, so a dtype change of the copy stays its own
        embedding = model.decoder.token_embedding.weight
        shared = nn.Parameter(embedding.data, requires_grad=embedding.requires_grad)
        candidate = copy.deepcopy(model.decoder, memo={id(embedding): shared})
        candidates[mode] = (candidate, _convert_decoder(candidate, mode, "cpu"))
    # after the copies: a packed oneDNN weight cannot be deep-copied
    _convert_decoder(model.decoder, "fp32", "cpu")
    probes = {mode: _decoder_probe(decoder, audio) for mode, (decoder, _) in candidates.items()}
    measured = _time_in_turns(probes, DECODER_REPEATS)
    timings = {f"decoder_{mode}": ms for mode, ms in measured.items()}
    model.decoder, model.exact_decoder = candidates[choose("decoder", tuple(measured), timings)]
    return timings


def _time_in_turns(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, timed in turns (a, b, a, b, ...) after a warm call each,
    so that a slow moment of the machine falls on all of them alike."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: sorted(ms)[len(ms) // 2] for name, ms in samples.items()}


def _decoder_probe(decoder: TextDecoder, audio: Tensor) -> Callable[[], object]:
    """A greedy step of one row, then a step of five (a beam search's, or a batch of
    streams'), as decoding takes them: the layers, their attention over a 30 s window's
    audio keys, and the pick. Its MLPs and output projection alone, back to back, kept the
    weights in cache as no decode does (the bf16 decoder timed 0.76-0.98 of the fp32 one
    there on a Xeon without AMX; a whole step, 0.75-1.10). The five-row step weighs in what
    one row leaves out: with the fp32 decoder packed too, a bf16 step of one row took 0.57-0.66
    of an fp32 one over twenty loads on 2 EPYC cores, close to MIN_GAIN's 0.7 (one load in
    thirty kept fp32, and decoded the fixtures 1.5x slower), a step of five rows 0.47."""
    audio_kv = decoder.cross_cache(audio)
    steps = [torch.zeros((rows, 1), dtype=torch.long) for rows in (1, 5)]  # token 0 at 0

    def step() -> object:
        for tokens in steps:
            hidden, _ = decoder(tokens, tokens, KVCache([], audio_kv), None, None)
            picked = decoder.pick_logits(hidden)
        return picked

    return step


class Int8Embedding(nn.Module):
    """Embedding rows stored as int8 with one scale per row (4x smaller than fp32)."""

    def __init__(self, weight: Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        # max |w| per row, and the rows quantized a block at a time: no full-size float
        # temporaries (the embedding is 80 MB in fp32; they raised the start-up peak RSS)
        peak = torch.maximum(weight.amax(dim=1, keepdim=True), -weight.amin(dim=1, keepdim=True))
        scale = peak.clamp(min=1e-8) / 127.0
        qweight = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
        for start in range(0, weight.shape[0], 4096):
            rows = slice(start, start + 4096)
            qweight[rows] = torch.round(weight[rows] / scale[rows])
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.to(dtype))
        self.dtype = dtype

    def forward(self, ids: Tensor) -> Tensor:
        return self.qweight[ids].to(self.dtype) * self.scale[ids]


class RowwiseInt8Linear(nn.Module):
    """int8 weights (one scale per output channel), computed so that each row of the input
    gets the same result whatever else is in the batch.

    A single new token per item (a decoding step) runs torch's weight-only int8 kernel on bf16
    activations, row by row; longer inputs (prompt and prefix passes, word alignment) quantize
    each row on its own and multiply in exact int32. Slower than dynamic quantization's kernels
    (the output projection ~1.6x per step), so it serves only where exactness is asked for."""

    def __init__(self, qweight: Tensor, scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("qweight", qweight)  # (out, in) int8, may be shared
        self.register_buffer("scale", scale.reshape(-1).float())
        self.register_buffer("scale_bf16", self.scale.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> RowwiseInt8Linear:
        return cls(*_quantize_rows(linear.weight.data.float()), linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if x.dim() == 3 and x.shape[1] == 1:  # one new token per item: a decoding step
            out = torch._weight_int8pack_mm(
                rows.to(torch.bfloat16).contiguous(), self.qweight, self.scale_bf16
            ).float()
        else:
            row_scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
            quantized = torch.round(rows / row_scale).to(torch.int8)
            out = torch._int_mm(quantized, self.qweight.t()).float() * row_scale * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], -1).to(x.dtype)


def rowwise_int8_supported() -> bool:
    """Whether this torch build has the CPU kernels RowwiseInt8Linear needs."""
    try:
        weight = torch.ones(8, 32, dtype=torch.int8)
        torch._weight_int8pack_mm(
            torch.ones(1, 32, dtype=torch.bfloat16), weight, torch.ones(8, dtype=torch.bfloat16)
        )
        torch._int_mm(torch.ones(17, 32, dtype=torch.int8), weight.t())
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


def _quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """int8 rows of `weight` and their scales (max |w| per output channel / 127)."""
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
    return torch.round(weight / scale).to(torch.int8), scale[:, 0].clone()


class Int8WeightOnlyLinear(nn.Module):
    """int8 weights, per-output-channel scales, compute in the activation dtype (CUDA)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        qweight, scale = _quantize_rows(weight)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias.clone() if bias is not None else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightOnlyLinear:
        return cls(linear.weight.data, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)


def _dynamic_int8(module: nn.Module) -> nn.Module:
    """Linear layers -> int8 weights with dynamically quantized activations (CPU kernels)."""
    # torch 2.13 still ships quantize_dynamic and its x86 (fbgemm/oneDNN) kernels, but warns
    # on every call that torch.ao.quantization and qint8 tensors are deprecated. Migration
    # path: torchao's `quantize_(module, Int8DynamicActivationInt8WeightConfig())` (another
    # dependency, with its own kernels to measure) once a torch release drops torch.ao.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other",
            UserWarning,
        )
        # inplace: swap the Linears of `module` (always a fresh copy or about to be replaced)
        # instead of deep-copying it first, which briefly doubled the output projection
        return torch.ao.quantization.quantize_dynamic(
            module, {nn.Linear}, dtype=torch.qint8, inplace=True
        )


def _swap_linears(module: nn.Module, convert: Callable[[nn.Linear], nn.Module]) -> None:
    """Replace every nn.Linear inside `module` by `convert(linear)`."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, convert(child))
        else:
            _swap_linears(child, convert)


def _is_dynamic_int8(module: nn.Module) -> bool:
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in module.modules())


def _convert_encoder(encoder: nn.Module, mode: str, device: str) -> None:
    if mode == "int8" and not device.startswith("cuda"):
        if _is_dynamic_int8(encoder):
            return  # converted already, by `auto`'s calibration
        encoder.float()
        for i, block in enumerate(encoder.blocks):
            encoder.blocks[i] = _dynamic_int8(block)
        return
    encoder.to(_DTYPES.get(mode, torch.float16))


def _convert_decoder(decoder: TextDecoder, mode: str, device: str) -> TextDecoder | None:
    """Convert `decoder` in place; returns its batch-invariant twin where the converted
    kernels are not batch-invariant themselves (int8 on CPU), else None."""
    if mode != "int8":
        decoder.to(_DTYPES[mode])
        if not device.startswith("cuda"):
            _pack_cpu_decoder(decoder, mode)
        return None
    cuda = device.startswith("cuda")
    dtype = torch.float16 if cuda else torch.float32
    weight = decoder.token_embedding.weight.data.float()
    decoder.to(dtype)
    embedding = Int8Embedding(weight, dtype)
    if cuda:
        _swap_linears(decoder.blocks, Int8WeightOnlyLinear.from_linear)
        decoder.logits_head = Int8WeightOnlyLinear(weight, None)
        decoder.token_embedding = embedding
        return None
    exact = _shared_copy(decoder) if rowwise_int8_supported() else None
    # built on the meta device: no random init of a 51864 x 384 matrix that is replaced at
    # once (nn.utils.skip_init does the same but imports sympy on first use: +0.9 s load time)
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    head.weight = nn.Parameter(weight, requires_grad=False)
    for i, block in enumerate(decoder.blocks):
        decoder.blocks[i] = _dynamic_int8(block)
    decoder.logits_head = _dynamic_int8(nn.Sequential(head))
    decoder.token_embedding = embedding
    if exact is not None:  # older torch: dynamic quantization only (see rowwise_int8_supported)
        _swap_linears(exact.blocks, RowwiseInt8Linear.from_linear)
        # the output projection is the embedding matrix: its int8 rows serve both
        exact.logits_head = RowwiseInt8Linear(embedding.qweight, embedding.scale, None)
        exact.token_embedding = embedding
    return exact


def _pack_cpu_decoder(decoder: TextDecoder, mode: str) -> None:
    """The bf16 or fp32 CPU decoder's Linear weights and output projection packed for oneDNN
    (models.packed), where this build runs them; the bf16 one also fuses its self-attention
    projections and picks greedy tokens from the shortlist (models.shortlist). A decoder
    packed already is left as it is (the bf16 query, key and value could not be fused again
    from packed weights)."""
    if decoder.logits_head is not None or mode not in ("fp32", "bf16"):
        return
    weight = decoder.token_embedding.weight.data
    if packed_fp32_supported() if mode == "fp32" else packed_linear_supported():
        if mode == "bf16":
            for block in decoder.blocks:
                block.attn.fused_qkv = fused_qkv(block.attn)
        pack = functools.partial(PackedLinear.from_linear, dtype=weight.dtype)
        _swap_linears(decoder.blocks, pack)
        # the output projection too: the product of more rows than the shortlist serves
        # (beams, a draft's block, a batch) took ~3x as long unpacked
        decoder.logits_head = PackedLinear(weight, None)
    if mode == "bf16" and shortlist_supported():
        decoder.pick_head = ShortlistProjection(weight)


def fused_qkv(attn: MultiHeadAttention) -> PackedLinear:
    """Self-attention's three bf16 projections as one packed product: each output column is
    the same dot product as in its own (bit for bit: tests/test_model.py), and one oneDNN
    call for a decoder step's row took 29 against 71 us for three."""
    key_bias = torch.zeros_like(attn.query.bias)  # Whisper's keys have none
    weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]).detach()
    bias = torch.cat([attn.query.bias, key_bias, attn.value.bias]).detach()
    return PackedLinear(weight, bias)


def _shared_copy(module: nn.Module) -> nn.Module:
    """A new module tree over the same parameter and buffer tensors (no weights copied)."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)


def apply_precision(model: Whisper, plan: PrecisionPlan) -> None:
    """Convert `model` in place to the plan's device and precisions."""
    # "x86" picks fbgemm or oneDNN per shape; measured fastest for the decoder here.
    if plan.device == "cpu" and "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"
    _convert_encoder(model.encoder, plan.encoder, plan.device)
    # a decoder `auto` timed was installed converted (_pick_decoder): converting it again
    # would quantize its output projection a second time (the shortlist's int8 rows)
    if f"decoder_{plan.decoder}" not in dict(plan.calibration_ms):
        model.exact_decoder = _convert_decoder(model.decoder, plan.decoder, plan.device)
    model.to(plan.device)
    if plan.device == "cpu":
        # the unconverted weights (fp32 and packed: their plain layout) and `auto`'s
        # candidate copies are gone
        _release_freed_heap()


def _release_freed_heap() -> None:
    """Collect the converted-away modules (reference cycles keep some alive until the next
    gc run) and return freed heap to the OS (glibc malloc_trim): conversions free large
    temporaries that glibc would otherwise keep resident. No trim where glibc is absent."""
    gc.collect()
    trim_heap()
