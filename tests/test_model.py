"""The acoustic model: loaders, front end, decoding, words, guards — on real speech."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATA, SPEECH_CLIPS, load_clip, reference, utterance_times, wer
from torch import nn

from streamstt.models import loading
from streamstt.models import precision as precision_module
from streamstt.models.audio import (
    HOP_LENGTH,
    decode_audio,
    log_mel_spectrogram,
    mel_filters,
    recording_features,
)
from streamstt.models.checkpoints import ModelLoadError
from streamstt.models.decoding import (
    DecodingOptions,
    PhraseBias,
    find_repetition_loop,
    spread_boost,
)
from streamstt.models.packed import (
    PackedLinear,
    packed_fp32_supported,
    packed_linear_supported,
)
from streamstt.models.shortlist import (
    MAX_ROWS,
    SHORTLIST,
    ShortlistProjection,
    shortlist_supported,
)
from streamstt.models.transcriber import Request, TranscribeOptions, Transcriber
from streamstt.models.whisper import MultiHeadAttention, attention, key_padding_mask

FULL = TranscribeOptions(full_window=True)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_tokens_equal_faster_whisper(transcriber_fp32, beam_size):
    """Same weights, fp32, greedy or beam 5 at temperature 0, 30 s window: our tokens are
    faster-whisper's tokens."""
    faster_whisper = pytest.importorskip("faster_whisper")
    reference_model = faster_whisper.WhisperModel(
        str(loading.bundled_model_dir()), device="cpu", compute_type="float32", cpu_threads=2
    )
    options = replace(FULL, decoding=DecodingOptions(beam_size=beam_size))
    for name in SPEECH_CLIPS:
        segments, _ = reference_model.transcribe(
            str(DATA / f"{name}.wav"),
            beam_size=beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        theirs = _deduplicated([t for s in segments for t in s.tokens])
        ours = transcriber_fp32.transcribe(torch.from_numpy(load_clip(name)), options).tokens
        assert _deduplicated(ours) == theirs, name


def test_a_phrase_boost_is_spread_over_its_tokens_by_their_letters():
    """ " Zeebrugge" is " Z" "ee" "b" "rug" "ge": its one-letter first token gains a ninth of
    the boost wherever it could start the phrase (not enough to turn " Zhan" into it), the
    next tokens their shares once the text ends with the phrase's start; no token gains more
    than half the boost (a one-token phrase)."""
    parts = spread_boost(9.0, [1, 2, 1, 3, 2])
    assert parts == [1.0, 2.0, 1.0, 3.0, 2.0]
    assert spread_boost(8.0, [6]) == [4.0]
    phrase = [10, 11, 12, 13, 14]
    logits = torch.zeros(3, 20)
    PhraseBias([[(phrase, parts)]]).apply(
        logits, [[5], [5, 10, 11], [10, 11, 12, 13, 14]], [0, 0, 0]
    )
    assert logits[0].nonzero().flatten().tolist() == [10] and logits[0, 10] == 1.0
    assert logits[1].nonzero().flatten().tolist() == [12] and logits[1, 12] == 1.0
    assert logits[2].nonzero().flatten().tolist() == [10]  # complete: it may start again


def _deduplicated(tokens: list[int]) -> list[int]:
    """faster-whisper repeats a segment's closing timestamp as the next one's opening."""
    return [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]


def test_a_beam_keeps_its_best_continuations_and_finishes_at_the_end_of_text():
    """Whisper's beam step: every beam offers its beam_size + 1 best tokens, the best
    beam_size continuations go on, an end of text ranked above the last of them finishes its
    sequence (scored with the end's log-probability), and finished sequences are ranked by
    average log-probability per token."""
    from streamstt.models.beam import _Beam, _best, _extend

    eot, options = 9, DecodingOptions(beam_size=2)
    beams = [_Beam((1,), (-0.1,), -0.1), _Beam((2,), (-0.5,), -0.5)]
    logprobs = torch.full((2, 10), -20.0)
    logprobs[0, [3, eot, 4]] = torch.tensor([-0.2, -0.3, -2.0])
    logprobs[1, [5, eot]] = torch.tensor([-0.05, -3.0])
    kept, source, done = _extend(beams, logprobs.topk(3, dim=-1), options, eot)
    assert [b.tokens for b in kept] == [(1, 3), (2, 5)] and source == [0, 1]
    assert [(b.tokens, round(b.score, 2)) for b in done] == [((1,), -0.4)]
    # per token: -0.4 for the finished one, -0.15 and -0.275 for the others
    assert _best([*done, *kept]).tokens == (1, 3)


def test_the_beams_cache_follows_the_beams_they_grew_from():
    """After a beam step each new beam reads the self-attention keys of the beam it grew
    from (repeats allowed); where every beam grew from the one in its place the cache is
    kept as it is, and the audio keys the beams share are never copied."""
    from streamstt.models.beam import _reordered
    from streamstt.models.whisper import KVCache

    layers = [(torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8)) for _ in range(2)]
    audio = [(torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)) for _ in range(2)]
    cache = KVCache(layers, audio)
    assert _reordered(cache, [0, 1, 2]) is cache
    moved = _reordered(cache, [2, 0, 0])
    for (k, v), (k0, v0) in zip(moved.self_kv, layers):
        assert torch.equal(k, k0[[2, 0, 0]]) and torch.equal(v, v0[[2, 0, 0]])
    assert moved.cross_kv is audio
    first = KVCache([(k[:1], v[:1]) for k, v in layers], audio)  # the opening: one row
    assert [k.shape[0] for k, _ in _reordered(first, [0, 0, 0]).self_kv] == [3, 3]


def test_wer_on_real_speech(transcriber):
    hypotheses = [transcriber.transcribe(torch.from_numpy(load_clip(n))).text for n in SPEECH_CLIPS]
    assert wer([reference(n) for n in SPEECH_CLIPS], hypotheses) <= 0.10, hypotheses


def test_long_audio_windows(transcriber):
    """A 33 s recording spans two windows; nothing is lost or doubled at the seam."""
    text = transcriber.transcribe(torch.from_numpy(load_clip("long_read"))).text
    assert wer([reference("long_read")], [text]) <= 0.10, text


@pytest.mark.parametrize(
    "name", ["en_us_male_44k_stereo.flac", "en_us_male_8k.wav", "en_us_male.ogg", "en_us_male.mp3"]
)
def test_file_formats_rates_and_channels(transcriber, name):
    audio = decode_audio(DATA / name)
    assert abs(audio.shape[-1] / 16000 - len(load_clip("en_us_male")) / 16000) < 0.1
    text = transcriber.transcribe(audio).text
    assert wer([reference("en_us_male")], [text]) <= 0.10, text


def test_batch_equals_single_items(transcriber_fp32):
    """Different lengths in one call (padded and masked) decode as they would alone."""
    clips = [torch.from_numpy(load_clip(n)) for n in ("sample", "en_us_female")]
    clips[1] = clips[1][: 3 * 16000]
    options = TranscribeOptions(full_window=False, word_timestamps=False)
    batched = transcriber_fp32.transcribe_batch([Request(c) for c in clips], options)
    for clip, together in zip(clips, batched):
        (alone,) = transcriber_fp32.transcribe_batch([Request(clip)], options)
        assert together.tokens == alone.tokens


def test_a_window_decodes_the_same_in_any_batch():
    """A final must not depend on which other windows share its batch: with
    batch_invariant the int8 decoder's twin computes row by row (dynamic quantization scales
    the whole batch with one factor and changed this very window's punctuation and word
    times). The int8 precision keeps the encoder in fp32 on CPU (the dynamically quantized
    int8 encoder that `auto` may pick has no such twin; the scheduler runs finals alone)."""
    transcriber = Transcriber.load(precision="int8", device="cpu")
    assert transcriber.model.exact_decoder is not None, "this torch lacks the row-by-row kernels"
    long_read = torch.from_numpy(load_clip("long_read"))
    window = long_read[int(15.44 * 16000) :]
    prompt = reference("long_read")[:300]
    others = [torch.from_numpy(load_clip(n)) for n in ("en_us_female", "sample", "two_utterances")]
    options = TranscribeOptions(full_window=True, batch_invariant=True)
    (alone,) = transcriber.transcribe_batch([Request(window, prompt)], options)
    for count in (1, 2, 3):
        requests = [Request(window, prompt), *(Request(o) for o in others[:count])]
        together = transcriber.transcribe_batch(requests, options)[0]
        assert together.tokens == alone.tokens, count
        assert [(w.word, w.start, w.end) for w in together.words] == [
            (w.word, w.start, w.end) for w in alone.words
        ], count


def test_bf16_attention_on_cpu_is_fp32_attention_rounded():
    """A bf16 decoder step's attention runs in fp32 on CPU (torch's bf16 CPU kernel is several
    times slower there): the result is fp32 attention rounded to bf16, and padded keys stay
    hidden by the (bf16) mask."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, n, 64, generator=generator) for n in (1, 1500, 1500))
    valid = torch.tensor([1500, 700])
    mask = key_padding_mask(valid, 1500, torch.bfloat16)
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    wide = F.scaled_dot_product_attention(
        q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), attn_mask=mask.float()
    )
    assert torch.equal(out, wide.bfloat16())
    short = attention(q[1:].bfloat16(), k[1:, :, :700].bfloat16(), v[1:, :, :700].bfloat16(), None)
    torch.testing.assert_close(out[1:].float(), short.float(), atol=1e-2, rtol=1e-2)


def test_bf16_audio_keys_kept_in_fp32_attend_as_when_widened_at_every_step():
    """The decoder's audio keys and values are widened once per decode on CPU (each step's
    copies cost more than its attention): the same result as widening them at every step."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, n, 64, generator=generator).bfloat16() for n in (1, 1500, 1500))
    mask = key_padding_mask(torch.tensor([1500, 700]), 1500, torch.bfloat16)
    assert torch.equal(attention(q, k.float(), v.float(), mask), attention(q, k, v, mask))


@torch.inference_mode()
@pytest.mark.parametrize("loaded", ["transcriber", "transcriber_fp32"])
def test_the_audio_keys_of_each_head_lie_together_with_the_projections_values(request, loaded):
    """A decoder step reads every layer's audio keys and values: each head's 1500 of them
    lie together (read from the projection's layout, the step's attention took twice as
    long), with the values of the projection; at every precision (`auto` picks by timing)."""
    decoder = request.getfixturevalue(loaded).model.decoder
    audio = torch.randn(2, 1500, 384, generator=torch.Generator().manual_seed(0))
    audio = audio.to(decoder.ln.weight.dtype)
    for (k, v), block in zip(decoder.cross_cache(audio), decoder.blocks):
        assert k.is_contiguous() and v.is_contiguous() and k.shape == (2, 6, 1500, 64)
        projected = block.cross_attn.project_kv(audio)
        assert torch.equal(k, projected[0].to(k.dtype)) and torch.equal(v, projected[1].to(v.dtype))


@torch.inference_mode()
def test_a_packed_bf16_linear_computes_what_f_linear_does():
    """The decoder's packed weights (models.packed) give F.linear's very bf16 results for
    every number of rows a decode feeds (a step, a draft block, beams, a prompt, the audio
    keys), and a strided input what F.linear gives for its dense copy."""
    if not packed_linear_supported():
        pytest.skip("no oneDNN bf16 products on this CPU: the decoder keeps nn.Linear")
    generator = torch.Generator().manual_seed(0)
    for features, out in ((384, 384), (384, 1536), (1536, 384)):
        linear = nn.Linear(features, out).to(torch.bfloat16)
        packed = PackedLinear.from_linear(linear)
        assert "packed" not in packed.state_dict()  # an opaque oneDNN tensor cannot be saved
        for rows in (1, 2, 5, 16, 224, 1500):
            x = torch.randn(2, rows, features, generator=generator).to(torch.bfloat16)
            assert torch.equal(packed(x), linear(x)), (features, out, rows)
        strided = torch.randn(7, 3, features, generator=generator).to(torch.bfloat16)
        strided = strided.transpose(0, 1)
        assert torch.equal(packed(strided), linear(strided.contiguous()))
    # the output projection: TextDecoder.logits' own product, for a step, beams, a block
    embedding = torch.randn(51864, 384, generator=generator).to(torch.bfloat16)
    head = PackedLinear(embedding, None)
    for rows in (1, 3, 5, 17):
        x = torch.randn(rows, 1, 384, generator=generator).to(torch.bfloat16)
        assert torch.equal(head(x), x @ embedding.T), rows


@torch.inference_mode()
def test_a_fused_self_attention_projection_gives_each_projection_bit_for_bit():
    """The bf16 decoder's query, key and value in one packed product
    (`precision.fused_qkv`) give what the three products give alone, for a step, a draft's
    block and a prompt."""
    if not packed_linear_supported():
        pytest.skip("no oneDNN bf16 products on this CPU: the decoder keeps nn.Linear")
    generator = torch.Generator().manual_seed(0)
    attn = MultiHeadAttention(384, 6).to(torch.bfloat16)
    fused = precision_module.fused_qkv(attn)
    for rows in (1, 5, 17, 224):
        x = torch.randn(2, rows, 384, generator=generator).to(torch.bfloat16)
        alone = attn.project_qkv(x)
        attn.fused_qkv = fused
        together = attn.project_qkv(x)
        attn.fused_qkv = None
        assert all(torch.equal(a, b) for a, b in zip(alone, together)), rows


def test_packed_weights_decode_the_same_tokens(monkeypatch):
    """The bf16 decoder with its weights packed decodes a real clip to the same tokens and
    word times as with nn.Linear, greedily and by beam search (5 rows a step: the packed
    output projection's product, not the shortlist's)."""
    if not packed_linear_supported():
        pytest.skip("no oneDNN bf16 products on this CPU: the decoder keeps nn.Linear")
    clip = torch.from_numpy(load_clip("sample"))
    packed = Transcriber.load(precision="bf16", device="cpu")
    assert isinstance(packed.model.decoder.blocks[0].mlp[0], PackedLinear)
    assert isinstance(packed.model.decoder.logits_head, PackedLinear)
    assert isinstance(packed.model.decoder.blocks[0].attn.fused_qkv, PackedLinear)
    monkeypatch.setattr(precision_module, "packed_linear_supported", lambda: False)
    plain = Transcriber.load(precision="bf16", device="cpu")
    assert isinstance(plain.model.decoder.blocks[0].mlp[0], nn.Linear)
    assert plain.model.decoder.logits_head is None
    assert plain.model.decoder.blocks[0].attn.fused_qkv is None
    beams = replace(FULL, decoding=replace(FULL.decoding, beam_size=5))
    for options in (FULL, beams):
        ours, theirs = packed.transcribe(clip, options), plain.transcribe(clip, options)
        assert ours.tokens == theirs.tokens and ours.words == theirs.words


@torch.inference_mode()
def test_a_packed_fp32_linear_is_f_linear_to_within_rounding():
    """The fp32 decoder's packed weights: oneDNN sums in another order than MKL, so not bit
    for bit, but within fp32 rounding for every number of rows a decode feeds."""
    if not packed_fp32_supported():
        pytest.skip("no oneDNN fp32 products in this torch: the fp32 decoder keeps nn.Linear")
    generator = torch.Generator().manual_seed(0)
    for features, out in ((384, 384), (384, 1536), (1536, 384), (384, 51864)):
        linear = nn.Linear(features, out, bias=out != 51864)
        packed = PackedLinear.from_linear(linear, dtype=torch.float32)
        assert packed.packed.dtype == torch.float32
        for rows in (1, 5, 17, 224):
            x = torch.randn(2, rows, features, generator=generator)
            torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-4)


def test_the_fp32_decoder_packed_decodes_the_same_tokens(monkeypatch):
    """`--precision fp32` on CPU packs the decoder's Linear weights and output projection,
    and `auto` installs the same where it keeps the fp32 decoder; a real clip decodes to
    the same tokens and word times as over nn.Linear, greedily and by beam search (the word
    probabilities within fp32 rounding)."""
    if not packed_fp32_supported():
        pytest.skip("no oneDNN fp32 products in this torch: the fp32 decoder keeps nn.Linear")
    clip = torch.from_numpy(load_clip("sample"))
    packed = Transcriber.load(precision="fp32", device="cpu")
    decoder = packed.model.decoder
    assert isinstance(decoder.blocks[0].mlp[0], PackedLinear)
    assert isinstance(decoder.logits_head, PackedLinear) and decoder.pick_head is None
    with monkeypatch.context() as patched:
        patched.setattr(precision_module, "choose", lambda part, modes, timings: "fp32")
        kept = Transcriber.load(precision="auto", device="cpu").model.decoder
        assert isinstance(kept.blocks[3].attn.out, PackedLinear)
        assert isinstance(kept.logits_head, PackedLinear)
    monkeypatch.setattr(precision_module, "packed_fp32_supported", lambda: False)
    plain = Transcriber.load(precision="fp32", device="cpu")
    assert isinstance(plain.model.decoder.blocks[0].mlp[0], nn.Linear)
    assert plain.model.decoder.logits_head is None
    beams = replace(FULL, decoding=replace(FULL.decoding, beam_size=5))
    for options in (FULL, beams):
        ours, theirs = packed.transcribe(clip, options), plain.transcribe(clip, options)
        assert ours.tokens == theirs.tokens
        assert [replace(w, probability=0.0) for w in ours.words] == [
            replace(w, probability=0.0) for w in theirs.words
        ]
        for a, b in zip(ours.words, theirs.words):
            assert a.probability == pytest.approx(b.probability, abs=1e-5)


@torch.inference_mode()
def test_the_shortlist_projection_scores_what_decoding_looks_at_as_bf16_does():
    """Read at int8, the bf16 output projection gives a greedy step the full bf16 product's
    values for the best text tokens and every special and timestamp token, and so the same
    pick; a pick outside them (a logit filter moved it) is flagged, and `logits` (prefix
    log-probabilities, no-speech, sampling) stays the full product, as do steps of more
    than MAX_ROWS rows. (On the decoder states
    of three noisy fixtures the picked tokens' log-probabilities moved by at most 0.008.)"""
    if not shortlist_supported():
        pytest.skip("no int8 weight-only kernel in this torch: the bf16 decoder reads bf16")
    bf16 = Transcriber.load(precision="bf16", device="cpu")
    decoder = bf16.model.decoder
    weight = decoder.token_embedding.weight.data
    assert isinstance(decoder.pick_head, ShortlistProjection)
    text = decoder.pick_head.text_tokens
    assert text == bf16.tokenizer.special.eot
    noise = torch.randn(64, 1, 384, generator=torch.Generator().manual_seed(0))
    hidden = decoder.ln(noise.bfloat16())
    full = (hidden @ weight.T).float()[:, 0]
    assert torch.equal(decoder.logits(hidden)[:, 0], full)
    for first in range(0, len(hidden), MAX_ROWS):  # a step of as many rows as it reads
        rows, expected = hidden[first : first + MAX_ROWS], full[first : first + MAX_ROWS]
        quick, exact = decoder.pick_logits(rows)
        quick = quick[:, 0]
        assert torch.equal(quick[:, text:], expected[:, text:])
        assert torch.equal(quick.argmax(-1), expected.argmax(-1)) and exact(expected.argmax(-1))
        best = expected[:, :text].topk(SHORTLIST // 2, dim=-1)
        assert torch.equal(quick.gather(1, best.indices), best.values)
        assert not exact(expected[:, :text].argmin(-1))  # the least likely token: int8 only
        # the rest (int8 rows, off by up to ~1) only enters the normalisation
        assert (quick.logsumexp(-1) - expected.logsumexp(-1)).abs().max() < 0.05
    # more rows (beams, a batch of streams): the full product, every token exact
    quick, exact = decoder.pick_logits(hidden)
    assert torch.equal(quick[:, 0], full) and exact(full[:, :text].argmin(-1))


def test_a_draft_makes_decoding_take_fewer_passes_not_other_text(transcriber, monkeypatch):
    """A stream's earlier words, given as a draft, are checked in one forward pass instead of
    being decoded token by token; the transcript is the greedy one whatever the draft says
    (right, or with its casing and punctuation lost, as interim words have them)."""
    clips = [torch.from_numpy(load_clip(n)) for n in ("en_us_female", "sample", "en_us_male")]
    options = TranscribeOptions(
        full_window=True, decoding=DecodingOptions(timestamps=False), batch_invariant=True
    )
    passes = []
    decoder = transcriber.model.exact_decoder or transcriber.model.decoder
    forward = decoder.forward
    monkeypatch.setattr(decoder, "forward", lambda *a: passes.append(1) or forward(*a))

    def decode(drafts):
        passes.clear()
        requests = [Request(clip, draft=draft) for clip, draft in zip(clips, drafts)]
        return transcriber.transcribe_batch(requests, options), len(passes)

    plain, plain_passes = decode(["", "", ""])
    assert min(len(r.text_tokens) for r in plain) >= 10
    exact, exact_passes = decode([r.text for r in plain])
    rough = [r.text.lower().replace(",", "").replace(".", "") for r in plain]
    guessed, guessed_passes = decode(rough)
    garbage, _ = decode(["banana split on a sunday"] * 3)
    for decoded in (exact, guessed, garbage):
        assert [r.tokens for r in decoded] == [r.tokens for r in plain]
        assert [r.text for r in decoded] == [r.text for r in plain]
    assert plain_passes > max(len(r.tokens) for r in plain)  # one pass per token, and more
    assert exact_passes <= 2  # the draft and the end of text
    assert guessed_passes < plain_passes / 2, (guessed_passes, plain_passes)


def test_word_times_follow_the_audio(transcriber):
    times = utterance_times()
    result = transcriber.transcribe(torch.from_numpy(load_clip("two_utterances")))
    words = result.words
    assert words and all(w.start <= w.end for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    first_b = next(i for i, w in enumerate(words) if w.word.strip().lower() == "i")
    utterance_a, utterance_b = times["utterances"]
    assert abs(words[0].start - utterance_a["start_s"]) <= 0.3
    assert abs(words[first_b - 1].end - utterance_a["end_s"]) <= 0.3
    assert abs(words[first_b].start - utterance_b["start_s"]) <= 0.3
    assert abs(words[-1].end - utterance_b["end_s"]) <= 0.3
    assert all(0.0 < w.probability <= 1.0 for w in words)
    assert 0.5 < result.confidence <= 1.0


@pytest.mark.parametrize("name", ["silence", "noise", "hum"])
def test_no_text_from_non_speech(transcriber, name):
    samples = decode_audio(DATA / f"{name}.wav")
    result = transcriber.transcribe(samples)
    assert result.text == "", (result.text, result.no_speech_prob, result.avg_logprob)


def test_repetition_loop_guard_rule():
    options = DecodingOptions()
    loop = [5, 6, 7, 8] * 4
    assert find_repetition_loop([1, 2] + loop, options) == 2 + 4
    assert find_repetition_loop(list(range(40)), options) is None
    assert find_repetition_loop([9, 9, 9], options) is None  # 'no no no' is speech


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_faster_whisper(n_mels):
    """Our hand-written Slaney filterbank is faster-whisper's (librosa's) one."""
    feature_extractor = pytest.importorskip("faster_whisper.feature_extractor")
    theirs = feature_extractor.FeatureExtractor.get_mel_filters(16000, 400, n_mels)
    ours = mel_filters(n_mels).numpy()
    assert ours.shape == theirs.shape == (n_mels, 201) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-6  # measured: 1e-9 / 2e-9 (float32 rounding)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_faster_whisper(n_mels):
    feature_extractor = pytest.importorskip("faster_whisper.feature_extractor")
    audio = load_clip("sample")
    theirs = feature_extractor.FeatureExtractor(feature_size=n_mels)(audio, padding=0)
    ours = log_mel_spectrogram(torch.from_numpy(audio), n_mels).numpy()
    assert ours.shape == theirs.shape
    # measured max |diff| 1.6e-5 (80 mels) / 2.1e-5 (128 mels) here, at most 6e-5 on any clip
    # in tests/data (float32 FFT rounding, torch vs numpy); the features span about -1..2
    assert np.abs(ours - theirs).max() < 1e-4


def test_recording_features_are_the_whole_log_mel_in_pieces():
    """The whole recording's log-mel is computed 30 s at a time (memory), yet it is the one
    log-mel of the whole signal: the same frames at every piece boundary."""
    audio = decode_audio(DATA / "long_read.wav")[: 65 * 16000 + 123]
    audio = torch.cat([audio, audio])[: 65 * 16000 + 123]  # past two pieces, odd length
    whole = log_mel_spectrogram(torch.nn.functional.pad(audio, (0, HOP_LENGTH)))
    ours = recording_features(audio)
    assert ours.shape == (80, audio.shape[-1] // HOP_LENGTH)
    assert torch.equal(ours, whole[:, : ours.shape[-1]])


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model file or folder"):
        Transcriber.load(tmp_path / "nope")


def test_corrupt_model_bin_is_a_clear_error(tmp_path):
    source = loading.bundled_model_dir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(source / name, tmp_path / name)
    data = (source / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match=r"model\.bin: truncated while reading"):
        Transcriber.load(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(ModelLoadError, match="not a CTranslate2 model.bin"):
        Transcriber.load(tmp_path)


def test_openai_and_huggingface_checkpoints_load(tmp_path, transcriber_fp32):
    """Write the bundled weights in the two other formats; both decode identically."""
    safetensors = pytest.importorskip("safetensors.torch")
    loaded = loading.load()
    state = loaded.model.state_dict()
    dims = loaded.model.dims
    torch.save(
        {
            "dims": vars(dims) if hasattr(dims, "__dict__") else dims.__dict__,
            "model_state_dict": state,
        },
        tmp_path / "tiny.en.pt",
    )
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    safetensors.save_file(_to_huggingface(state), str(hf_dir / "model.safetensors"))
    (hf_dir / "config.json").write_text(_hf_config(dims))
    shutil.copy(loading.bundled_model_dir() / "tokenizer.json", hf_dir / "tokenizer.json")
    clip = torch.from_numpy(load_clip("sample"))
    expected = transcriber_fp32.transcribe(clip, FULL).tokens
    for path in (tmp_path / "tiny.en.pt", hf_dir):
        other = Transcriber.load(path, device="cpu", precision="fp32")
        assert other.transcribe(clip, FULL).tokens == expected, path


def _to_huggingface(state: dict) -> dict:
    renames = [
        ("encoder.positional_embedding", "model.encoder.embed_positions.weight"),
        ("decoder.positional_embedding", "model.decoder.embed_positions.weight"),
        ("decoder.token_embedding.weight", "model.decoder.embed_tokens.weight"),
        ("encoder.ln_post.", "model.encoder.layer_norm."),
        ("decoder.ln.", "model.decoder.layer_norm."),
        ("encoder.blocks.", "model.encoder.layers."),
        ("decoder.blocks.", "model.decoder.layers."),
        ("encoder.conv", "model.encoder.conv"),
        (".attn_ln.", ".self_attn_layer_norm."),
        (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".mlp_ln.", ".final_layer_norm."),
        (".cross_attn.", ".encoder_attn."),
        (".attn.", ".self_attn."),
        (".query.", ".q_proj."),
        (".key.", ".k_proj."),
        (".value.", ".v_proj."),
        (".out.", ".out_proj."),
        (".mlp.0.", ".fc1."),
        (".mlp.2.", ".fc2."),
    ]
    out = {}
    for name, tensor in state.items():
        for old, new in renames:
            name = name.replace(old, new)
        out[name] = tensor.contiguous()
    return out


def _hf_config(dims) -> str:
    import json

    return json.dumps(
        {
            "num_mel_bins": dims.n_mels,
            "max_source_positions": dims.n_audio_ctx,
            "d_model": dims.n_audio_state,
            "encoder_attention_heads": dims.n_audio_head,
            "encoder_layers": dims.n_audio_layer,
            "vocab_size": dims.n_vocab,
            "max_target_positions": dims.n_text_ctx,
            "decoder_attention_heads": dims.n_text_head,
            "decoder_layers": dims.n_text_layer,
        }
    )


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_precision_modes_keep_accuracy(precision):
    model = Transcriber.load(precision=precision, device="cpu")
    hypotheses = [model.transcribe(torch.from_numpy(load_clip(n))).text for n in SPEECH_CLIPS]
    assert wer([reference(n) for n in SPEECH_CLIPS], hypotheses) <= 0.10, hypotheses


def test_candidates_are_timed_in_turns():
    """The candidates (the encoders, then the decoders) are timed alternately, so that a
    slow moment of a busy machine falls on all of them, and each gets its median."""
    calls: list[str] = []
    costs = {"slow": [5.0, 0.0, 5.0, 5.0, 5.0, 5.0], "fast": [0.0, 5.0, 0.0, 0.0, 0.0, 0.0]}

    def timed(name: str):
        def fn() -> None:
            calls.append(name)
            time.sleep(costs[name][len([c for c in calls if c == name]) - 1] / 1000)

        return fn

    measured = precision_module._time_in_turns({"slow": timed("slow"), "fast": timed("fast")}, 5)
    assert calls == ["slow", "fast"] + ["slow", "fast"] * 5  # a warm call each, then turns
    assert measured["fast"] < 2.5 < measured["slow"]  # medians: one odd sample each is ignored


def test_auto_precision_is_measured(transcriber):
    """`auto` times only the variants within 0.5 WER points of fp32 on noisy audio and keeps
    the fastest: never the int8 encoder (+3.4 points) nor the int8 decoder (+0.65 to +1.0,
    docs/accuracy.md); bf16 only where it took MIN_GAIN less time than fp32."""
    plan = transcriber.plan
    if plan.device == "cpu":
        measured = dict(plan.calibration_ms)
        assert set(measured) == {"encoder_fp32", "encoder_bf16", "decoder_fp32", "decoder_bf16"}
        bar = 1 - precision_module.MIN_GAIN
        for part, kept in (("encoder", plan.encoder), ("decoder", plan.decoder)):
            quicker = measured[f"{part}_bf16"] < measured[f"{part}_fp32"] * bar
            assert kept == ("bf16" if quicker else "fp32")
        assert isinstance(transcriber.model.decoder.pick_head, ShortlistProjection) == (
            plan.decoder == "bf16" and shortlist_supported()
        )


def test_auto_keeps_fp32_unless_another_precision_is_clearly_quicker():
    """Timings within MIN_GAIN of fp32's cross from one load to the next: there the pick
    stays fp32, so a restarted server gives the same audio the same text."""
    near = {"decoder_fp32": 10.36, "decoder_bf16": 7.79}  # a load on a Xeon without AMX
    assert precision_module.choose("decoder", ("fp32", "bf16"), near) == "fp32"
    clear = {"encoder_fp32": 40.0, "encoder_bf16": 20.0, "encoder_int8": 25.0}
    assert precision_module.choose("encoder", ("fp32", "bf16", "int8"), clear) == "bf16"
    slower = {"encoder_fp32": 21.4, "encoder_bf16": 31.4}
    assert precision_module.choose("encoder", ("fp32", "bf16"), slower) == "fp32"
    assert precision_module.choose("decoder", ("bf16",), {}) == "bf16"  # the only one allowed


@pytest.mark.cuda
def test_cuda_tokens_match_cpu(transcriber_fp32):
    gpu = Transcriber.load(device="cuda", precision="fp16")
    for name in SPEECH_CLIPS:
        clip = torch.from_numpy(load_clip(name))
        assert gpu.transcribe(clip, FULL).text == transcriber_fp32.transcribe(clip, FULL).text


@pytest.mark.cuda
def test_cuda_copy_overlaps_compute():
    """Batch k+1's host-to-device copy (side stream) starts before batch k's encoder ends."""
    gpu = Transcriber.load(device="cuda", precision="fp16")
    clips = [Request(torch.from_numpy(load_clip(n))) for n in SPEECH_CLIPS] * 16
    options = TranscribeOptions(full_window=True)
    current = gpu.prepare(clips, options)
    gpu.encode(current)  # warm-up
    torch.cuda.synchronize()
    compute_started = torch.cuda.Event(enable_timing=True)
    compute_ended = torch.cuda.Event(enable_timing=True)
    compute_started.record()
    gpu.encode(current)  # queued on the compute stream, runs asynchronously
    upcoming = gpu.prepare(clips, options)  # its copy is queued on the copy stream
    compute_ended.record()
    torch.cuda.synchronize()
    # the copy began while the encoder was still running: concurrent, not serialised after it
    assert upcoming.copy_started.elapsed_time(compute_ended) > 0
    assert compute_started.elapsed_time(upcoming.ready) > 0
