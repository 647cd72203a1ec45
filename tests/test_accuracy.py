"""Parity with the reference Whisper pipeline (issue 17): temperature fallback, the seek rule
and prompt reset of long form, and `auto` precision's accuracy rule — on real audio."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import DATA, normalise

from streamstt.models import loading
from streamstt.models import transcriber as transcriber_module
from streamstt.models.audio import SAMPLE_RATE, decode_audio
from streamstt.models.decoding import DecodedSequence
from streamstt.models.fallback import decode_with_fallback
from streamstt.models.longform import Seek
from streamstt.models.options import OFFLINE_OPTIONS, Request
from streamstt.models.results import Transcript, compression_ratio, repeated_phrase

HARD = DATA / "hard"
QUICK = replace(OFFLINE_OPTIONS, word_timestamps=False)


def test_fallback_decodes_a_failing_window_again_the_same_way_every_time(transcriber_fp32):
    """8 s of read speech under babble at 5 dB: greedy decoding is unsure (average
    log-probability below -1) and not silence, so the window is sampled again hotter; the
    samples come from a seeded generator, so the fallback's text is reproducible. (Without
    the beam search for unsure windows: its decode is more likely than any sample here.)"""
    audio = decode_audio(HARD / "read_babble5.flac")[: 8 * SAMPLE_RATE]
    options = replace(QUICK, unsure_beam_size=1)
    greedy = replace(options, temperatures=(0.0,))
    (first,) = transcriber_fp32.transcribe_batch([Request(audio)], greedy)
    assert first.avg_logprob < -1.0 and first.no_speech_prob < 0.6, first
    runs = [transcriber_fp32.transcribe_batch([Request(audio)], options)[0] for _ in range(2)]
    assert runs[0].temperature > 0.0
    assert runs[0].text and runs[0].text != first.text
    assert runs[0].tokens == runs[1].tokens
    assert not runs[0].repetition_loop
    assert compression_ratio(runs[0].text) <= options.compression_ratio_threshold


def _sequence(tokens: list[int], logprob: float, loop: bool = False) -> DecodedSequence:
    return DecodedSequence(tokens, [logprob] * len(tokens), 0.0, not loop, loop)


def test_fallback_replaces_a_loop_and_keeps_the_best_when_nothing_passes():
    """A looping greedy decode is retried; the first passing temperature is kept. Where no
    temperature passes, the most likely non-degenerate try is kept."""
    loop, fluent, unsure = _sequence([1] * 12, -0.1, True), _sequence([2], -0.2), _sequence([3], -3)
    texts = {1: "la " * 12, 2: "a sentence of words", 3: "some other words"}
    plan = {0.0: loop, 0.2: unsure, 0.4: fluent}

    def decode(items, decoding):
        return [plan.get(decoding.temperature, unsure) for _ in items]

    (kept,) = decode_with_fallback(decode, 1, lambda s: texts[s.tokens[0]], QUICK)
    assert kept is fluent
    plan = {0.0: loop}
    (kept,) = decode_with_fallback(decode, 1, lambda s: texts[s.tokens[0]], QUICK)
    assert kept is unsure  # the loop is more likely but degenerate
    calls = []
    decode_with_fallback(lambda i, d: calls.append(d) or [fluent] * len(i), 2, lambda s: "", QUICK)
    assert [d.temperature for d in calls] == [0.0]  # a passing decode is not retried


def test_a_streamed_final_is_tried_again_only_when_it_loops():
    """A stream's final (its beam search, FINAL_OPTIONS) is decoded again hotter when the
    decode loops, its text compresses above 2.4, or it says a three-word phrase three times
    in a row (a clause repeated with a word changed, or cut short: white-noise draws at
    5 dB, docs/accuracy.md); a merely unlikely decode (noisy speech, average
    log-probability under -1) or a phrase said again further on is kept without more
    decodes. An interim is never tried again."""
    from streamstt.server.stream.job import INTERIM_OPTIONS, final_options

    loop, fluent = _sequence([1] * 12, -0.8, True), _sequence([2], -0.9)
    unlikely, repeated = _sequence([3], -1.3), _sequence([4], -0.5)
    clause, twice = _sequence([5], -0.6), _sequence([6], -0.6)
    cut_short, apart = _sequence([7], -0.7), _sequence([8], -0.4)
    texts = {
        1: "three four " * 6,
        2: "holding paper cups",
        3: "a noisy guess",
        4: "la " * 20,
        5: "Still have to sleep. Shouldn't have to sleep. Couldn't have to sleep. "
        "Shouldn't have to sleep, sleep. Shouldn't have to sleep.",
        6: "One of the best, and one of the best again.",
        7: "Still half a three-fold in case they're half a three-fold in case they're half a "
        "three-fold and looking out",
        8: "I don't know where it went. I don't know who took it from the shelf, and I don't "
        "know why.",
    }
    calls = []
    cases = [(loop, True), (repeated, True), (clause, True), (unlikely, False), (twice, False)]
    cases += [(cut_short, True), (apart, False)]
    for first, retried in [*cases, (fluent, False)]:
        calls.clear()

        def decode(items, decoding, first=first):
            calls.append((decoding.beam_size, decoding.temperature, decoding.timestamps))
            return [first if decoding.temperature == 0 else fluent for _ in items]

        (kept,) = decode_with_fallback(decode, 1, lambda s: texts[s.tokens[0]], final_options(5))
        assert (kept is fluent) is (retried or first is fluent), texts[first.tokens[0]]
        assert calls[0] == (5, 0.0, False) and (len(calls) > 1) is retried
        if retried:  # the same search with timestamp tokens, then a sample (beams search at 0)
            assert calls[1:] == [(5, 0.0, True), (5, 0.2, False)]
        calls.clear()
        decode_with_fallback(decode, 1, lambda s: texts[s.tokens[0]], INTERIM_OPTIONS)
        assert calls == [(1, 0.0, False)]
    for bad in ({"loop_phrase_repeats": -1}, {"loop_phrase_words": 0}, {"loop_phrase_period": 0}):
        with pytest.raises(ValueError, match="loop_phrase"):
            replace(final_options(5), **bad)


def test_a_final_that_loops_is_searched_again_with_timestamp_tokens(transcriber_fp32):
    """The first 10 s of read_white5, decoded as a stream's final of five beams without
    timestamp tokens, says "half the police" three times (a loop); the same search with
    timestamp tokens does not, and it is kept before any hotter sample: the final is the
    temperature-0 search's text, the same on every run."""
    from streamstt.server.stream.job import final_options

    request = Request(decode_audio(HARD / "read_white5.flac")[: 10 * SAMPLE_RATE])
    options = replace(final_options(5), word_timestamps=False)
    searched = replace(options, temperatures=(0.0,))
    (looped,) = transcriber_fp32.transcribe_batch([request], searched)
    assert repeated_phrase(looped.text, 3, 3, 8), looped.text
    (sampled,) = transcriber_fp32.transcribe_batch(
        [request], replace(options, retry_with_timestamps=False)
    )
    assert sampled.temperature > 0.0
    stamped = replace(searched, decoding=replace(searched.decoding, timestamps=True))
    (expected,) = transcriber_fp32.transcribe_batch([request], stamped)
    (kept,) = transcriber_fp32.transcribe_batch([request], options)
    assert kept.temperature == 0.0 and kept.text == expected.text
    assert not repeated_phrase(kept.text, 3, 3, 8), kept.text


def test_only_unsure_greedy_decodes_are_searched_again_with_beams():
    """Greedy first; a decode under `unsure_logprob` that is not silence is decoded again by
    beam search at temperature 0 (only those items), and the fallback then judges the beam's
    decode."""
    sure, unsure = _sequence([1], -0.2), _sequence([2], -0.6)
    silent = DecodedSequence([3], [-1.5], 0.9, True, False)
    searched, failing = _sequence([4], -0.3), _sequence([5], -1.2)
    calls, hopeless = [], []

    def decode(items, decoding):
        calls.append((items, decoding.beam_size, decoding.temperature))
        hopeless.append((decoding.hopeless_below, decoding.hopeless_no_speech))
        if decoding.beam_size > 1:
            return [searched if i == 1 else failing for i in items]
        if decoding.temperature > 0:
            return [sure for _ in items]
        return [[sure, unsure, silent, unsure][i] for i in items]

    kept = decode_with_fallback(decode, 4, lambda s: "words", QUICK)
    assert calls[:2] == [([0, 1, 2, 3], 1, 0.0), ([1, 3], 5, 0.0)]
    # the greedy pass may stop early where beams follow (not they, nor a hotter try)
    assert hopeless == [(-0.4, 0.6), (None, 1.0), (None, 1.0)]
    assert kept[:3] == [sure, searched, silent]
    assert kept[3] is sure and calls[2] == ([3], 1, 0.2)  # the beam's decode failed too
    calls.clear()
    hopeless.clear()
    decode_with_fallback(decode, 4, lambda s: "words", replace(QUICK, unsure_beam_size=1))
    assert all(beams == 1 for _, beams, _ in calls)
    assert hopeless[0] == (None, 1.0)  # no beams follow: greedy decodes to the end
    calls.clear()  # without a fallback, the beams still search the unsure decodes
    kept = decode_with_fallback(decode, 4, lambda s: "words", replace(QUICK, temperatures=(0.0,)))
    assert calls == [([0, 1, 2, 3], 1, 0.0), ([1, 3], 5, 0.0)]
    assert kept == [sure, searched, silent, failing]


def test_an_unsure_window_gets_the_reference_beam_search_text(transcriber_fp32):
    """12 s of read speech in white noise at 10 dB: greedy decoding is unsure, so offline
    decodes the window again by beam search of 5 and gives faster-whisper's text at its
    default beam size (fp32), word for word; greedy's text differs."""
    audio = decode_audio(HARD / "read_white10.flac")[: 12 * SAMPLE_RATE]
    (greedy,) = transcriber_fp32.transcribe_batch(
        [Request(audio)], replace(QUICK, unsure_beam_size=1)
    )
    assert greedy.avg_logprob < QUICK.unsure_logprob
    theirs = _faster_whisper_fp32_text(audio, beam_size=5)
    ours = transcriber_fp32.transcribe(audio, QUICK).text
    assert ours == theirs and ours != greedy.text


def test_a_greedy_decode_sure_to_be_unsure_stops_early(transcriber_fp32):
    """30 s of read speech in white noise at 5 dB: greedy decoding averages far under
    -0.4, so before a beam search it stops once its log-probabilities sum under -0.4 times
    the most tokens it may have (no count of tokens to come can bring the average back);
    what it decoded till then is the full decode's start."""
    audio = decode_audio(HARD / "read_white5.flac")[: 30 * SAMPLE_RATE]
    greedy = replace(QUICK, unsure_beam_size=1, temperatures=(0.0,))
    (full,) = transcriber_fp32.transcribe_batch([Request(audio)], greedy)
    decoding = replace(greedy.decoding, hopeless_below=-0.4, hopeless_no_speech=0.6)
    (cut,) = transcriber_fp32.transcribe_batch([Request(audio)], replace(greedy, decoding=decoding))
    assert len(cut.tokens) < len(full.tokens) and full.tokens[: len(cut.tokens)] == cut.tokens
    assert full.avg_logprob < cut.avg_logprob * len(cut.tokens) / 224 < -0.4


@pytest.mark.parametrize("name", ["noise.wav", "silence.wav"])
def test_no_words_from_non_speech_offline(transcriber, name):
    """The fallback must not sample words out of noise or silence: no-speech windows pass."""
    result = transcriber.transcribe(decode_audio(DATA / name), QUICK)
    assert result.text == "" and result.temperature == 0.0, result.text


def test_clean_two_window_reading_equals_faster_whisper(transcriber_fp32):
    """44 s of clean speech (two windows, the second prompted with the first's text):
    the reference pipeline's text, word for word (fp32, greedy, its defaults)."""
    audio = decode_audio(HARD / "read_clean.flac")
    theirs = _faster_whisper_fp32_text(audio, beam_size=1)
    assert transcriber_fp32.transcribe(audio, QUICK).text == theirs


def _faster_whisper_fp32_text(audio: torch.Tensor, beam_size: int) -> str:
    """The reference pipeline's text (faster-whisper, fp32, its defaults, no VAD) on the
    same weights; skips where faster-whisper is not installed."""
    faster_whisper = pytest.importorskip("faster_whisper")
    model = faster_whisper.WhisperModel(
        str(loading.bundled_model_dir()), device="cpu", compute_type="float32", cpu_threads=2
    )
    segments, _ = model.transcribe(audio.numpy(), beam_size=beam_size, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def _window_result(tokenizer, pieces: list[str | float], temperature: float = 0.0) -> Transcript:
    """A decoded window's tokens from text pieces and timestamp seconds."""
    tokens: list[int] = []
    for piece in pieces:
        if isinstance(piece, float):
            tokens.append(tokenizer.special.timestamp_begin + round(piece / 0.02))
        else:
            tokens += tokenizer.encode_text(piece)
    return Transcript("", [], [], tokens, 0.0, -0.2, 0.9, temperature=temperature)


def test_seek_rule_and_prompt_of_long_form(transcriber_fp32):
    """A window cut mid-segment (or ending with a timestamp pair), the last and shorter one
    too, restarts at its last timestamp and only the complete segments join the prompt; a
    window that ends with a closed segment is done as a whole; a window that needed a hot
    fallback resets the prompt."""
    tokenizer = transcriber_fp32.tokenizer
    seek = Seek(tokenizer, torch.zeros(90 * SAMPLE_RATE), options=QUICK)
    cut = _window_result(tokenizer, [0.0, " one", 10.0, 12.0, " two"])
    seek.take(seek.next_request(), cut)
    assert seek.position == 12 * SAMPLE_RATE
    assert list(seek.next_request().prompt) == cut.tokens[:3]
    closed = _window_result(tokenizer, [0.0, " three", 20.0])
    seek.take(seek.next_request(), closed)
    assert seek.position == 42 * SAMPLE_RATE
    assert list(seek.next_request().prompt) == cut.tokens[:3] + closed.tokens
    hot = _window_result(tokenizer, [0.0, " four", 20.0], temperature=0.6)
    seek.take(seek.next_request(), hot)
    assert list(seek.next_request().prompt) == []
    # the last window (18 s) follows the same rule: its closing pair says where speech
    # stopped being decoded, and the audio after it gets a window of its own
    last = seek.next_request()
    assert last.audio.shape[-1] == 18 * SAMPLE_RATE
    seek.take(last, _window_result(tokenizer, [0.0, " five", 6.0, 6.0]))
    assert seek.position == 78 * SAMPLE_RATE
    assert seek.next_request().audio.shape[-1] == 12 * SAMPLE_RATE


def test_after_an_unsure_window_the_next_is_searched_at_once(transcriber_fp32):
    """Long form (`search_after_unsure`): after a window whose greedy decode was unsure (so
    it was searched with beams) or needed a hotter try, the next window is searched with
    `unsure_beam_size` beams without a greedy decode first; so on while each such search
    averages under `unsure_logprob`. A sure window or one dropped as silence ends it."""
    tokenizer = transcriber_fp32.tokenizer
    seek = Seek(tokenizer, torch.zeros(300 * SAMPLE_RATE), options=QUICK)

    def beams_after(beams=1, logprob=-0.2, temperature=0.0, dropped=""):
        closed = _window_result(tokenizer, [0.0, " one", 30.0], temperature)  # whole window
        result = replace(closed, beam_size=beams, avg_logprob=logprob, dropped=dropped)
        seek.take(seek.next_request(), result)
        options = seek.window_options
        assert options == replace(QUICK, decoding=options.decoding)
        return options.decoding.beam_size

    assert seek.window_options == QUICK
    assert beams_after() == 1  # greedy and sure
    assert beams_after(beams=5, logprob=-0.3) == 5  # greedy was unsure: searched
    assert beams_after(beams=5, logprob=-0.5) == 5  # searched at once, its average under
    assert beams_after(beams=5, logprob=-0.3) == 1  # searched at once and sure
    assert beams_after(temperature=0.4, logprob=-0.9) == 5  # needed a hotter try
    assert beams_after(beams=5, logprob=-0.9, dropped="no speech") == 1
    off = Seek(
        tokenizer, torch.zeros(60 * SAMPLE_RATE), options=replace(QUICK, search_after_unsure=False)
    )
    off.take(off.next_request(), replace(_window_result(tokenizer, [" one"]), beam_size=5))
    assert off.window_options == off.options


def test_a_noisy_recording_skips_the_greedy_decode_it_would_throw_away(
    transcriber_fp32, monkeypatch
):
    """44 s of speech in white noise at 5 dB, two windows, both unsure: with
    `search_after_unsure` the second window gets no greedy decode, and the text is what
    greedy-then-beams gives."""
    audio = decode_audio(HARD / "read_white5.flac")
    greedy_decodes = []
    decode = transcriber_module.greedy_decode

    def counted(decoder, tokenizer, filters, options, inputs):
        greedy_decodes.append(options.temperature)
        return decode(decoder, tokenizer, filters, options, inputs)

    monkeypatch.setattr(transcriber_module, "greedy_decode", counted)
    probed = transcriber_fp32.transcribe(audio, replace(QUICK, search_after_unsure=False))
    probes = greedy_decodes.count(0.0)
    greedy_decodes.clear()
    searched = transcriber_fp32.transcribe(audio, QUICK)
    assert (probes, greedy_decodes.count(0.0)) == (2, 1)
    assert searched.text == probed.text and searched.beam_size == 5


def test_recognize_is_the_offline_pipeline(server, transcriber):
    """Recognize decodes as `streamstt transcribe` does (OFFLINE_OPTIONS: the 30 s window,
    the temperature fallback, the whole recording's log-mel): the same words on noisy
    speech, where each of those changes the text."""
    import grpc

    from streamstt.client.client import recognize_request
    from streamstt.models.longform import transcribe_long
    from streamstt.v1 import asr_pb2_grpc

    path = HARD / "read_white10.flac"
    offline = transcribe_long(transcriber, decode_audio(path), OFFLINE_OPTIONS)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    response = stub.Recognize(recognize_request(path.read_bytes()), timeout=120)
    served = " ".join(r.alternatives[0].transcript for r in response.results)
    assert normalise(served) == normalise(offline.text)
