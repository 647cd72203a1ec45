"""`streamstt mic`: stream the microphone through sounddevice."""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys

from ..client import StreamInterrupted, streaming_config

BLOCK_QUEUE_CHUNKS = 50  # chunks buffered between the audio callback and the sender


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


def run_mic(args: argparse.Namespace, make_client, display) -> int:
    try:
        sd = _sounddevice()
        if args.list_devices:
            print(sd.query_devices())
            return 0
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        sd.check_input_settings(device=device, channels=1, samplerate=args.rate, dtype="int16")
    except Exception as exc:  # noqa: BLE001 - PortAudio reports many kinds of errors
        print(f"streamstt mic: no usable input device: {exc}", file=sys.stderr)
        return 2
    chunks: queue.Queue[bytes | None] = queue.Queue(BLOCK_QUEUE_CHUNKS)

    def callback(indata, frames, time_info, status) -> None:
        # When the network is behind, drop audio here: PortAudio's callback must never block.
        with contextlib.suppress(queue.Full):
            chunks.put_nowait(bytes(indata))

    def audio():
        while (chunk := chunks.get()) is not None:
            yield chunk

    config = streaming_config(args.rate)
    blocksize = args.rate * args.chunk_ms // 1000
    with (
        make_client(args) as client,
        sd.RawInputStream(
            samplerate=args.rate,
            blocksize=blocksize,
            device=device,
            channels=1,
            dtype="int16",
            callback=callback,
        ) as stream,
    ):
        print("listening; Ctrl-C to finish", file=sys.stderr)
        responses = client.stream(config, audio())
        try:
            for response in responses:
                display.show(response)
        except KeyboardInterrupt:
            stream.stop()
            chunks.put(None)  # half-close: the server finalises what it heard
            try:
                for response in responses:
                    display.show(response)
            except StreamInterrupted as exc:
                print(f"streamstt mic: {exc}", file=sys.stderr)
                return 1
        except StreamInterrupted as exc:
            print(f"streamstt mic: {exc}", file=sys.stderr)
            return 1
    return 0
