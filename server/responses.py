"""Every protocol message the service sends, built from engine events and transcripts."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration

from streamstt.models.transcriber import Transcript, Word
from streamstt.v1 import asr_pb2

from .profanity import mask
from .settings import StreamSettings
from .stream.events import Event, Final, Interim, Progress, SpeechEvent

Response = asr_pb2.StreamingRecognizeResponse
STABLE, TENTATIVE = 0.9, 0.1  # stability reported for committed and tentative words
SEGMENT_SLACK_S = 0.05  # a word belongs to a Recognize segment it starts this close to
_SPEECH_EVENTS = {
    "BEGIN": Response.SPEECH_ACTIVITY_BEGIN,
    "END": Response.SPEECH_ACTIVITY_END,
    "END_OF_SINGLE_UTTERANCE": Response.END_OF_SINGLE_UTTERANCE,
}


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(int(round(max(0.0, seconds) * 1e9)))
    return value


def streaming(event: Event, settings: StreamSettings, channel_tag: int = 0) -> Response:
    """The response that reports one engine event (not End: that is the call's status);
    `channel_tag`: its channel, with separate recognition per channel."""
    if isinstance(event, (Interim, Final)):
        response = (
            _interim(event, settings) if isinstance(event, Interim) else _final(event, settings)
        )
        for result in response.results:
            result.channel_tag = channel_tag
        return response
    if not isinstance(event, SpeechEvent):
        raise TypeError(f"no response reports {type(event).__name__}")
    return Response(
        speech_event_type=_SPEECH_EVENTS[event.kind],
        speech_event_time=duration(event.time_s),
        processing=_processing(event.progress),
    )


def recognize(
    transcripts: Sequence[Transcript], audio_s: float, config, separate: bool = False
) -> asr_pb2.RecognizeResponse:
    """A whole file's transcript (or, `separate`, one a channel): one result per segment."""
    response = asr_pb2.RecognizeResponse(total_audio=duration(audio_s))
    for channel, transcript in enumerate(transcripts, start=1):
        for index, segment in enumerate(transcript.segments):
            result = _segment(transcript, segment, index, config)
            result.channel_tag = channel if separate else 0
            response.results.append(result)
    return response


def _segment(
    transcript: Transcript, segment, index: int, config
) -> asr_pb2.SpeechRecognitionResult:
    words = [
        w
        for w in transcript.words
        if segment.start - SEGMENT_SLACK_S <= w.start < segment.end + SEGMENT_SLACK_S
    ]
    alternative = _alternative(
        segment.text,
        words,
        config.enable_word_time_offsets,
        config.enable_word_confidence,
        confidence=_mean(words),
        masked=config.profanity_filter,
    )
    return asr_pb2.SpeechRecognitionResult(
        alternatives=[alternative],
        result_start_time=duration(segment.start),
        result_end_time=duration(segment.end),
        utterance_index=index,
    )


def _interim(event: Interim, settings: StreamSettings) -> Response:
    response = Response(processing=_processing(event.progress))
    for words, stability in ((event.committed, STABLE), (event.tentative, TENTATIVE)):
        if not words:
            continue
        text = " ".join(w.word for w in words)
        alternative = _alternative(
            text, words, settings.word_times, settings.word_confidence,
            masked=settings.profanity_filter,
        )  # fmt: skip
        response.results.append(
            asr_pb2.StreamingRecognitionResult(
                alternatives=[alternative],
                is_final=False,
                stability=stability,
                result_start_time=duration(words[0].start),
                result_end_time=duration(event.end_s),
                utterance_index=event.utterance_index,
            )
        )
    return response


def _final(event: Final, settings: StreamSettings) -> Response:
    result = event.result
    alternative = _alternative(
        result.transcript,
        result.words,
        settings.word_times,
        settings.word_confidence,
        confidence=result.confidence,
        masked=settings.profanity_filter,
    )
    final = asr_pb2.StreamingRecognitionResult(
        alternatives=[alternative],
        is_final=True,
        stability=0.0,
        result_start_time=duration(result.start),
        result_end_time=duration(result.end),
        utterance_index=result.utterance_index,
    )
    return Response(results=[final], processing=_processing(event.progress))


def _alternative(
    transcript: str,
    words: Sequence[Word],
    word_times: bool,
    word_confidence: bool,
    confidence: float = 0.0,
    masked: bool = False,
) -> asr_pb2.SpeechRecognitionAlternative:
    """`masked`: the profanity filter is on (transcript and words)."""
    shown = mask if masked else str
    alternative = asr_pb2.SpeechRecognitionAlternative(
        transcript=shown(transcript), confidence=confidence
    )
    if word_times or word_confidence:
        for word in words:
            info = asr_pb2.WordInfo(word=shown(word.word))
            if word_times:
                info.start_time.CopyFrom(duration(word.start))
                info.end_time.CopyFrom(duration(word.end))
            if word_confidence:
                info.confidence = word.probability
            alternative.words.append(info)
    return alternative


def _processing(progress: Progress) -> asr_pb2.ProcessingInfo:
    processing = asr_pb2.ProcessingInfo(
        audio_received=duration(progress.received_s),
        audio_processed=duration(progress.processed_s),
    )
    if progress.queue_ms is not None:
        processing.queue_ms, processing.compute_ms = progress.queue_ms, progress.compute_ms
    return processing


def _mean(words: Sequence[Word]) -> float:
    return sum(w.probability for w in words) / len(words) if words else 0.0
