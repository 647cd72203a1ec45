"""One streaming call, owned by its `StreamSession` (session.py), the package's entry.

A chunk's way through, in order:
- ingest.py: bytes -> 16 kHz mono samples (pcm.py decodes, libsoxr resamples) and the speech
  probability of each 32 ms frame (vad.py, Silero). On the prefetch thread.
- steps.py: the pure steps over the stream's frozen `StreamState` (state.py), which call
  endpointing.py (utterance begin and end), agreement.py (LocalAgreement commits) and, through
  planning.py, decide the next decode (a `Job`, job.py) for the scheduler.
- events.py / outbox.py: what the client is told, queued for the transport.
buffer.py holds the stream's audio.
"""

from .session import StreamSession, Timing

__all__ = ["StreamSession", "Timing"]
