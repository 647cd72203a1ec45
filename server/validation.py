"""Request validation: each rule maps bad input to a precise status and a message that tells
the caller what to fix. Pure functions; the servicer turns `InvalidRequest` into an abort."""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from streamstt.v1 import asr_pb2

from .settings import ServerConfig, StreamSettings

MIN_RATE, MAX_RATE = 8000, 48000  # Hz accepted for raw audio
RAW_ENCODINGS = (asr_pb2.LINEAR16, asr_pb2.FLOAT32, asr_pb2.MULAW, asr_pb2.ALAW)
CONTAINER_ENCODINGS = (asr_pb2.FLAC, asr_pb2.WAV, asr_pb2.OGG_OPUS, asr_pb2.MP3)
MIN_BUDGET_MS, MAX_BUDGET_MS = 100, 60000
MIN_SILENCE_MS, MAX_SILENCE_MS = 100, 10000
MIN_UTTERANCE_MS = 1000
MAX_PHRASES = 5000  # phrase hints a request, over all its speech_contexts
MAX_PHRASE_CHARS = 100  # characters in one phrase
MAX_PHRASES_CHARS = 100_000  # characters over all phrases
MAX_BOOST = 20.0  # logit units (SpeechContext.boost)
# phrases with a boost: each is checked at every decoded token (models.decoding.PhraseBias)
MAX_BOOSTED_PHRASES = 100


@dataclass(frozen=True)
class InvalidRequest(Exception):
    code: grpc.StatusCode
    message: str


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, message)


def encoding_name(value: int) -> str:
    try:
        return asr_pb2.AudioEncoding.Name(value)
    except ValueError:
        return str(value)


def check_common(
    config: asr_pb2.RecognitionConfig, server: ServerConfig, model_names: set[str]
) -> int:
    """Rules shared by streaming and unary calls; returns the channel count."""
    if config.model and config.model not in model_names:
        raise InvalidRequest(
            grpc.StatusCode.NOT_FOUND,
            f"model {config.model!r} is not loaded; ListModels shows {sorted(model_names)}",
        )
    language = config.language_code.lower()
    if language and not (language == "en" or language.startswith("en-")):
        raise _invalid(
            f"language_code {config.language_code!r} is not supported: the model "
            "recognises English (en, en-US, ...)"
        )
    channels = config.audio_channel_count or 1
    if not 1 <= channels <= server.max_channels:
        raise _invalid(
            f"audio_channel_count {config.audio_channel_count} is outside 1-{server.max_channels}"
        )
    _check_phrases(config.speech_contexts)
    return channels


def _check_phrases(contexts) -> None:
    """Google's limits on hints: they become decoder prompt text, re-read every decode."""
    phrases = [p for c in contexts for p in c.phrases]
    if len(phrases) > MAX_PHRASES:
        raise _invalid(f"speech_contexts hold {len(phrases)} phrases; at most {MAX_PHRASES}")
    longest = max(phrases, key=len, default="")
    if len(longest) > MAX_PHRASE_CHARS:
        raise _invalid(
            f"a speech_contexts phrase has {len(longest)} characters; at most {MAX_PHRASE_CHARS}"
        )
    total = sum(map(len, phrases))
    if total > MAX_PHRASES_CHARS:
        raise _invalid(
            f"speech_contexts phrases hold {total} characters; at most {MAX_PHRASES_CHARS}"
        )
    for context in contexts:
        if not (math.isfinite(context.boost) and 0 <= context.boost <= MAX_BOOST):
            raise _invalid(f"speech_contexts boost {context.boost} is not in 0-{MAX_BOOST:g}")
    boosted = sum(len(c.phrases) for c in contexts if c.boost > 0)
    if boosted > MAX_BOOSTED_PHRASES:
        raise _invalid(
            f"speech_contexts hold {boosted} boosted phrases; at most {MAX_BOOSTED_PHRASES}"
        )


def check_rate(rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise _invalid(f"sample_rate_hertz {rate} is outside {MIN_RATE}-{MAX_RATE} Hz")


def streaming_settings(
    request: asr_pb2.StreamingRecognitionConfig, server: ServerConfig, model_names: set[str]
) -> StreamSettings:
    config = request.config
    if not request.HasField("config"):
        raise _invalid("streaming_config.config is required (encoding, sample_rate_hertz)")
    channels = check_common(config, server, model_names)
    if config.encoding not in RAW_ENCODINGS:
        if config.encoding in CONTAINER_ENCODINGS:
            raise _invalid(
                f"encoding {encoding_name(config.encoding)} is a file format, only "
                "for Recognize; stream raw LINEAR16, FLOAT32, MULAW or ALAW"
            )
        raise _invalid(
            f"encoding {encoding_name(config.encoding)} is not a streaming encoding;"
            " use LINEAR16, FLOAT32, MULAW or ALAW"
        )
    check_rate(config.sample_rate_hertz)
    budget = request.latency_budget_ms or server.latency_budget_ms
    if not MIN_BUDGET_MS <= budget <= MAX_BUDGET_MS:
        raise _invalid(f"latency_budget_ms {budget} is outside {MIN_BUDGET_MS}-{MAX_BUDGET_MS}")
    silence = request.endpointing.silence_ms or server.silence_ms
    if not MIN_SILENCE_MS <= silence <= MAX_SILENCE_MS:
        raise _invalid(
            f"endpointing.silence_ms {silence} is outside {MIN_SILENCE_MS}-{MAX_SILENCE_MS}"
        )
    max_utterance = request.endpointing.max_utterance_ms or server.max_utterance_ms
    if max_utterance < MIN_UTTERANCE_MS:
        raise _invalid(f"endpointing.max_utterance_ms {max_utterance} is below {MIN_UTTERANCE_MS}")
    return StreamSettings(
        encoding=config.encoding,
        sample_rate=config.sample_rate_hertz,
        channels=channels,
        interim_results=request.interim_results,
        single_utterance=request.single_utterance,
        latency_budget_ms=budget,
        silence_ms=silence,
        max_utterance_ms=min(max_utterance, 30000),  # one model window at most
        vad_events=request.enable_voice_activity_events,
        word_times=config.enable_word_time_offsets,
        word_confidence=config.enable_word_confidence,
        profanity_filter=config.profanity_filter,
        final_beam_size=server.final_beam_size,
    )


def hotwords(config) -> tuple[tuple[str, float], ...]:
    """The request's boosted phrases with their boosts (models.options.Request.hotwords)."""
    return tuple((p, c.boost) for c in config.speech_contexts if c.boost > 0 for p in c.phrases)


def phrases(config) -> str:
    """The request's phrase hints as prompt text."""
    return ", ".join(p for c in config.speech_contexts for p in c.phrases)
