"""Structure-aware fuzzing of request sequences: never a crash, UNKNOWN, hang or lost health."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamstt.v1 import asr_pb2, asr_pb2_grpc

Request = asr_pb2.StreamingRecognizeRequest
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}

recognition = st.builds(
    asr_pb2.RecognitionConfig,
    encoding=st.integers(min_value=-1, max_value=12),
    sample_rate_hertz=st.sampled_from([0, 7999, 8000, 16000, 22050, 44100, 48000, 48001, -5]),
    audio_channel_count=st.integers(min_value=-2, max_value=10),
    language_code=st.sampled_from(["", "en-US", "en", "fr-FR", "x" * 50]),
    model=st.sampled_from(["", "tiny.en", "nope"]),
    enable_word_time_offsets=st.booleans(),
    profanity_filter=st.booleans(),
)
config_request = st.builds(
    lambda config, interim, single, budget, silence: Request(
        streaming_config=asr_pb2.StreamingRecognitionConfig(
            config=config,
            interim_results=interim,
            single_utterance=single,
            latency_budget_ms=budget,
            endpointing=asr_pb2.EndpointingConfig(silence_ms=silence),
        )
    ),
    recognition,
    st.booleans(),
    st.booleans(),
    st.sampled_from([0, 50, 500, 2000, 100000]),
    st.sampled_from([0, 50, 300, 20000]),
)
audio_request = st.binary(min_size=0, max_size=6400).map(lambda b: Request(audio_content=b))
sequences = st.lists(st.one_of(config_request, audio_request), min_size=0, max_size=8).flatmap(
    lambda rest: st.one_of(st.just(rest), config_request.map(lambda c: [c, *rest]))
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests=sequences)
def test_request_sequences_never_break_the_server(server, requests):
    channel = grpc.insecure_channel(server.target)
    stub = asr_pb2_grpc.RecognizerStub(channel)
    try:
        list(stub.StreamingRecognize(iter(requests), timeout=30))
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    channel.close()
    assert code in ALLOWED, code
    assert health.status == health_pb2.HealthCheckResponse.SERVING
