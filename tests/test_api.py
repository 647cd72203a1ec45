"""API features through a real server: the profanity filter, Finalize, separate recognition
per channel, and phrase boosting."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from conftest import DATA, load_clip, normalise, reference, wer
from test_server import finals, run_stream

from streamstt.client.bench.latency import phrase_recall
from streamstt.client.client import (
    FINALIZE,
    StreamingClient,
    recognize_request,
    streaming_config,
)
from streamstt.server import validation
from streamstt.server.profanity import mask
from streamstt.server.stream.events import Final
from streamstt.server.stream.replay import replay
from streamstt.server.stream.vad import SileroVad
from streamstt.v1 import asr_pb2, asr_pb2_grpc

MASKED = ["d***", "s***", "b******"]


def test_mask_keeps_everything_but_listed_words():
    assert mask("Damn! A shit's day, classic Dickens.") == "D***! A s***'s day, classic Dickens."


def test_the_profanity_filter_masks_interims_and_finals(server):
    plain = run_stream(server.target, "profane")
    assert {"damn", "shit", "bastard"} <= set(normalise(_text(plain)).split()), _text(plain)
    filtered = run_stream(server.target, "profane", profanity_filter=True)
    shown = [r.alternatives[0] for response in filtered for r in response.results if r.alternatives]
    said = " ".join(a.transcript for a in shown) + " ".join(w.word for a in shown for w in a.words)
    assert not {"damn", "shit", "bastard"} & set(normalise(said).split()), said
    final = _text(filtered)
    assert all(word in final for word in MASKED), final


def test_the_profanity_filter_in_recognize(server):
    config = asr_pb2.RecognitionConfig(profanity_filter=True, enable_word_time_offsets=True)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    data = (DATA / "profane.wav").read_bytes()
    response = stub.Recognize(recognize_request(data, config), timeout=60)
    text = " ".join(r.alternatives[0].transcript for r in response.results)
    assert all(word in text for word in MASKED), text
    words = [w.word for r in response.results for w in r.alternatives[0].words]
    assert "d***" in words and "damn" not in [normalise(w) for w in words]


def test_finalize_closes_the_utterance_and_loses_nothing(server):
    """Finalize in the middle of continuous speech (no pause there): the utterance so far
    gets its final before any result of later audio, and the rest of the speech is heard
    in the next utterance."""
    pcm = (load_clip("long_read")[: 16000 * 12] * 32767).astype("<i2").tobytes()
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    at = 40  # after 4 s of audio, inside the second sentence
    sent: list[float] = []

    def audio():
        for i, chunk in enumerate(chunks):
            if i == at:
                sent.append(time.monotonic())
                yield FINALIZE
            yield chunk

    with StreamingClient(server.target) as client:
        config = streaming_config(16000, silence_ms=5000)  # no pause would end it otherwise
        responses, arrived = [], []
        for response in client.stream(config, audio(), pace_s=0.1, timeout=120):
            responses.append(response)
            arrived.append(time.monotonic())
    results = finals(responses)
    assert len(results) >= 2 and results[0].utterance_index == 0
    first_end = results[0].result_end_time.ToTimedelta().total_seconds()
    assert abs(first_end - at * 0.1) <= 0.2, first_end  # it ends where Finalize came
    first_final = next(i for i, r in enumerate(responses) if any(x.is_final for x in r.results))
    assert all(  # nothing of the audio after it came before it
        x.utterance_index == 0 for r in responses[:first_final] for x in r.results
    )
    heard = " ".join(r.alternatives[0].transcript for r in results)
    # the words heard open the passage: nothing at the cut was lost or doubled
    spoken = " ".join(reference("long_read").split()[: len(heard.split())])
    assert len(heard.split()) >= 25 and wer([spoken], [heard]) <= 0.15, heard
    print(f"final {arrived[first_final] - sent[0]:.2f} s after Finalize")


def _text(responses) -> str:
    return " ".join(r.alternatives[0].transcript for r in finals(responses))


def _stereo() -> tuple[bytes, str, str]:
    """A call recording: one speaker a channel, one after the other (interleaved PCM16)."""
    import numpy as np

    left, right = load_clip("en_us_male"), load_clip("en_us_female")
    gap = np.zeros(16000, dtype=np.float32)
    left = np.concatenate([left, gap, np.zeros_like(right)])
    right = np.concatenate([np.zeros_like(load_clip("en_us_male")), gap, right])
    frames = np.stack([left, right], axis=1)
    return (
        (frames * 32767).astype("<i2").tobytes(),
        reference("en_us_male"),
        reference("en_us_female"),
    )


def _by_channel(results) -> dict[int, str]:
    said: dict[int, list[str]] = {}
    for r in results:
        said.setdefault(r.channel_tag, []).append(r.alternatives[0].transcript)
    return {tag: " ".join(texts) for tag, texts in said.items()}


def test_separate_recognition_per_channel_streaming(server):
    pcm, first, second = _stereo()
    chunks = [pcm[i : i + 6400] for i in range(0, len(pcm), 6400)]  # 100 ms of 2 channels
    config = streaming_config(16000, channels=2)
    config.config.enable_separate_recognition_per_channel = True
    with StreamingClient(server.target) as client:
        responses = list(client.stream(config, chunks, pace_s=0.02, timeout=120))
    said = _by_channel(finals(responses))
    assert set(said) == {1, 2}, said
    assert wer([first], [said[1]]) <= 0.1 and wer([second], [said[2]]) <= 0.1, said
    interims = [r for resp in responses for r in resp.results if not r.is_final]
    assert interims and all(r.channel_tag in (1, 2) for r in interims)
    # each channel numbers its own utterances from 0
    assert {r.utterance_index for r in finals(responses) if r.channel_tag == 2} >= {0}


def test_separate_recognition_per_channel_recognize(server):
    import io

    import numpy as np
    import soundfile

    pcm, first, second = _stereo()
    wav = io.BytesIO()
    soundfile.write(wav, np.frombuffer(pcm, "<i2").reshape(-1, 2), 16000, format="WAV")
    config = asr_pb2.RecognitionConfig(enable_separate_recognition_per_channel=True)
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    response = stub.Recognize(recognize_request(wav.getvalue(), config), timeout=120)
    said = _by_channel(response.results)
    assert wer([first], [said[1]]) <= 0.1 and wer([second], [said[2]]) <= 0.1, said
    mixed = stub.Recognize(recognize_request(wav.getvalue()), timeout=120)
    assert {r.channel_tag for r in mixed.results} == {0}  # default: the channels averaged


def test_each_channel_counts_as_a_stream(make_server):
    from streamstt.client.client import StreamInterrupted

    running = make_server(max_streams=1)
    config = streaming_config(16000, channels=2)
    config.config.enable_separate_recognition_per_channel = True
    with StreamingClient(running.target) as client, pytest.raises(StreamInterrupted) as refused:
        list(client.stream(config, [b"\0\0" * 3200], timeout=30))
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams=1" in str(refused.value)


RARE_TERMS = (DATA / "rare_terms.phrases").read_text().splitlines()


def _recall(text: str) -> int:
    return phrase_recall(text, RARE_TERMS)


def test_boost_raises_the_recall_of_the_phrases(server):
    """The phrases are the prompt either way; boost adds the decoder bias on top."""
    stub = asr_pb2_grpc.RecognizerStub(grpc.insecure_channel(server.target))
    data = (DATA / "rare_terms.wav").read_bytes()
    found = {}
    for boost in (0.0, 8.0):
        config = asr_pb2.RecognitionConfig(
            speech_contexts=[asr_pb2.SpeechContext(phrases=RARE_TERMS, boost=boost)]
        )
        response = stub.Recognize(recognize_request(data, config), timeout=120)
        found[boost] = _recall(" ".join(r.alternatives[0].transcript for r in response.results))
    assert found[8.0] > found[0.0], found
    print(f"recall of {len(RARE_TERMS)} terms: prompt only {found[0.0]}, boost 8 {found[8.0]}")


def test_boost_in_streaming(transcriber):
    """The server's stream session with the request's hints, in virtual time
    (server.stream.replay): at real time, where each window ends depends on the load, and a
    window that ends in the middle of a name can turn into a list of the phrases at either
    boost (docs/accuracy.md, "Phrase boost at real time"). The session's rules alone are
    the same on every run."""
    audio, vad = load_clip("rare_terms"), SileroVad()
    found = {}
    for boost in (0.0, 8.0):
        config = asr_pb2.RecognitionConfig(
            speech_contexts=[asr_pb2.SpeechContext(phrases=RARE_TERMS, boost=boost)]
        )
        hints = validation.phrases(config), validation.hotwords(config)
        events = asyncio.run(replay(transcriber, vad, audio, *hints))
        text = " ".join(e.result.transcript for e in events if isinstance(e, Final))
        found[boost] = _recall(text)
    assert found[8.0] > found[0.0], found
    print(f"streamed recall of 11 terms: prompt only {found[0.0]}, boost 8 {found[8.0]}")
