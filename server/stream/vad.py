"""Voice activity detection with the Silero VAD model that the `silero-vad` package ships.

The ONNX graph is run directly with onnxruntime so that the recurrent state is explicit and
belongs to the stream (`VadState`), not to a shared model object: many streams share one
session, and a stream's state is just data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

VAD_RATE = 16000  # Hz: the rate the model runs at
VAD_FRAME = 512  # samples (32 ms): the frame the 16 kHz model takes
VAD_LOOKBACK = 64  # samples of the previous frame the model expects in front of each frame
STATE_SHAPE = (2, 1, 128)


@dataclass
class VadState:
    """Per-stream detector state: the model's recurrent state and unconsumed samples."""

    rnn: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, dtype=np.float32))
    lookback: np.ndarray = field(default_factory=lambda: np.zeros(VAD_LOOKBACK, dtype=np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


def _model_path() -> Path:
    import silero_vad

    return Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"


class SileroVad:
    """A shared onnxruntime session; `score` advances one stream's state."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime

        # No run-time network, ever: onnxruntime's telemetry is on by default in some builds
        # (a DNS lookup and a cache write were seen when a session was created).
        onnxruntime.disable_telemetry_events()
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        # Creating a session sets the process's OpenMP thread count to its one intra-op
        # thread, and torch sizes each later thread's intra-op pool from that: the model
        # thread, started after this, decoded on one core (twice as slow on two) until the
        # count was put back.
        threads = torch.get_num_threads()
        self._session = onnxruntime.InferenceSession(
            str(path or _model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        torch.set_num_threads(threads)
        self._rate = np.array(VAD_RATE, dtype=np.int64)
        self._lock = threading.Lock()  # one session, many threads: run() calls are serialised

    def score(self, state: VadState, audio: np.ndarray) -> np.ndarray:
        """Append 16 kHz samples; return the speech probability of each completed frame."""
        pending = np.concatenate([state.pending, audio.astype(np.float32, copy=False)])
        count = len(pending) // VAD_FRAME
        probs = np.zeros(count, dtype=np.float32)
        for i in range(count):
            frame = pending[i * VAD_FRAME : (i + 1) * VAD_FRAME]
            window = np.concatenate([state.lookback, frame])[None, :]
            with self._lock:
                out, state.rnn = self._session.run(
                    None, {"input": window, "state": state.rnn, "sr": self._rate}
                )
            probs[i] = float(out.reshape(-1)[0])
            state.lookback = frame[-VAD_LOOKBACK:].copy()
        state.pending = pending[count * VAD_FRAME :].copy()
        return probs
