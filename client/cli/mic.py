"""`streamstt mic`: stream the microphone through sounddevice.

Ctrl-C half-closes the stream: capture stops, the server finalises what it heard and the
final is printed before the process exits 0. If no final comes within `--finish-timeout-s`
(the server is gone or stuck) it exits 1 with a message; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from ..client import StreamInterrupted, streaming_config

BLOCK_QUEUE_CHUNKS = 50  # chunks buffered between the audio callback and the sender
PREFERRED_RATE = 16000  # the model's rate; other device rates are resampled by the server
DROP_REPORT_S = 1.0  # at most one dropped-audio line on stderr a second


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise RuntimeError(
            f"microphone input needs sounddevice and PortAudio ({exc}); "
            "install with: pip install sounddevice && apt-get install "
            "libportaudio2"
        ) from exc
    return sounddevice


@dataclass
class Capture:
    """Audio from the PortAudio callback to the sender, counting what had to be dropped."""

    rate: int
    chunks: queue.Queue = field(default_factory=lambda: queue.Queue(BLOCK_QUEUE_CHUNKS))
    stopped: threading.Event = field(default_factory=threading.Event)
    dropped_samples: int = 0

    def callback(self, indata, frames, time_info, status) -> None:
        # PortAudio's callback must never block: when the sender is behind, count and drop.
        try:
            self.chunks.put_nowait(bytes(indata))
        except queue.Full:
            self.dropped_samples += frames

    def audio(self):
        """Chunks until capture stops and the queue is empty (then the request stream ends)."""
        while not (self.stopped.is_set() and self.chunks.empty()):
            try:
                yield self.chunks.get(timeout=0.05)
            except queue.Empty:
                continue

    def finalize_on_enter(self, lines) -> None:
        """Each line read (Enter) asks for the open utterance's final now; runs on its own
        thread. The request goes in order with the audio, and never displaces a chunk."""
        from ..client import FINALIZE

        for _ in lines:
            if self.stopped.is_set():
                return
            self.chunks.put(FINALIZE)

    @property
    def dropped_ms(self) -> int:
        return self.dropped_samples * 1000 // self.rate


def list_devices(sd) -> str:
    """Every device, with input devices marked `in` and the default input marked `*`."""
    default_in = sd.default.device[0]
    lines = []
    for index, device in enumerate(sd.query_devices()):
        inputs = device["max_input_channels"]
        mark = ("*" if index == default_in else " ") + (" in" if inputs > 0 else "   ")
        rate = int(device["default_samplerate"])
        lines.append(f"{mark} {index:3d} {device['name']} ({inputs} in, {rate} Hz)")
    lines.append("in = input device; * = default input")
    return "\n".join(lines)


def choose_rate(sd, device, requested: int | None) -> int:
    """The requested rate, else 16 kHz, else the device's native rate (the server resamples
    8-48 kHz). Raises PortAudio's error when none works."""
    if requested:
        sd.check_input_settings(device=device, channels=1, samplerate=requested, dtype="int16")
        return requested
    try:
        sd.check_input_settings(device=device, channels=1, samplerate=PREFERRED_RATE, dtype="int16")
        return PREFERRED_RATE
    except Exception:  # noqa: BLE001 - PortAudio raises its own error types
        native = int(sd.query_devices(device, "input")["default_samplerate"])
        sd.check_input_settings(device=device, channels=1, samplerate=native, dtype="int16")
        return native


class Finisher:
    """SIGINT handler: the first half-closes and arms the finish timeout, a second exits."""

    def __init__(self, capture: Capture, stream, client, timeout_s: float) -> None:
        self.capture, self.stream, self.client = capture, stream, client
        self.timeout_s = timeout_s
        self.signalled = False
        self.timed_out = False

    def __call__(self, signum, frame) -> None:
        if self.signalled:
            print("\nstreamstt mic: interrupted again; exiting without the final", file=sys.stderr)
            os._exit(130)
        self.signalled = True
        print("\nstreamstt mic: finishing (Ctrl-C again to quit at once)", file=sys.stderr)
        self.stream.stop()
        self.capture.stopped.set()
        timer = threading.Timer(self.timeout_s, self._give_up)
        timer.daemon = True
        timer.start()

    def _give_up(self) -> None:
        self.timed_out = True
        self.client.close()  # the response iterator ends with CANCELLED


def run_mic(args: argparse.Namespace, make_client, display) -> int:
    try:
        sd = _sounddevice()
        if args.list_devices:
            print(list_devices(sd))
            return 0
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        rate = choose_rate(sd, device, args.rate)
    except Exception as exc:  # noqa: BLE001 - PortAudio reports many kinds of errors
        print(f"streamstt mic: no usable input device: {exc}", file=sys.stderr)
        return 2
    capture = Capture(rate)
    with (
        make_client(args) as client,
        sd.RawInputStream(
            samplerate=rate,
            blocksize=rate * args.chunk_ms // 1000,
            device=device,
            channels=1,
            dtype="int16",
            callback=capture.callback,
        ) as stream,
    ):
        finisher = Finisher(capture, stream, client, args.finish_timeout_s)
        previous = signal.signal(signal.SIGINT, finisher)
        keys = sys.stdin is not None and sys.stdin.isatty()  # a pipe's lines are not key presses
        hint = "Enter ends an utterance, " if keys else ""
        print(f"listening at {rate} Hz; {hint}Ctrl-C finishes", file=sys.stderr)
        if keys:
            reader = threading.Thread(target=capture.finalize_on_enter, args=(sys.stdin,))
            reader.daemon = True
            reader.start()
        config = streaming_config(rate, profanity_filter=args.profanity_filter)
        try:
            return _show(client.stream(config, capture.audio()), display, capture, finisher)
        finally:
            signal.signal(signal.SIGINT, previous)
            if capture.dropped_ms:
                print(
                    f"streamstt mic: warning: {capture.dropped_ms} ms of audio were dropped "
                    "(the network or the server fell behind)",
                    file=sys.stderr,
                )


def _show(responses, display, capture: Capture, finisher: Finisher) -> int:
    reported, reported_at = 0, 0.0
    try:
        for response in responses:
            display.show(response)
            now = time.monotonic()
            if capture.dropped_ms > reported and now - reported_at >= DROP_REPORT_S:
                reported, reported_at = capture.dropped_ms, now
                display.clear()
                print(f"[dropped {reported} ms of audio so far]", file=sys.stderr, flush=True)
    except StreamInterrupted as exc:
        display.clear()
        if finisher.timed_out:
            print(
                f"streamstt mic: no final within {finisher.timeout_s:g} s of Ctrl-C "
                "(is the server still up?)",
                file=sys.stderr,
            )
        else:
            print(f"streamstt mic: {exc}", file=sys.stderr)
        return 1
    display.clear()
    return 0
