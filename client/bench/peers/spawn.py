"""A peer's own server process for `streamstt bench --peer`: started from the peer's venv
(benchmarks/peers/setup.sh), waited for until it listens, stopped with SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..spawn import stop_process

DEFAULT_VENV = Path("~/.cache/streamstt/peers/whisperlive")  # setup.sh's default too
VENV_ENV = "STREAMSTT_PEER_VENV"
LAUNCHER = Path(__file__).with_name("whisperlive_server.py")
START_TIMEOUT_S = 120.0  # torch and whisper_live imports on a slow, busy CPU
STOP_TIMEOUT_S = 10.0
POLL_S = 0.2


@dataclass(frozen=True)
class PeerServerOptions:
    venv: Path  # the peer's venv (its bin/python runs the server)
    model_dir: Path  # CTranslate2 weights: the bundled tiny.en, as streamstt serves
    threads: int  # OMP_NUM_THREADS, which CTranslate2 takes when cpu_threads is 0
    max_clients: int  # above every N of the sweep, so no stream is refused by count
    log_path: Path


def peer_venv(flag: str | None) -> Path:
    """--peer-venv, else $STREAMSTT_PEER_VENV, else setup.sh's default."""
    return Path(flag or os.environ.get(VENV_ENV) or DEFAULT_VENV).expanduser()


def peer_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(
            f"no peer venv at {venv}: run benchmarks/peers/setup.sh --venv {venv} first"
        )
    return python


def free_port() -> int:
    # WhisperLive cannot bind port 0 and report it, so pick one; the race is harmless here.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def package_versions(venv: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions in the peer venv (its Python, not ours)."""
    code = (
        "import importlib.metadata as m, sys; print(' '.join(m.version(p) for p in sys.argv[1:]))"
    )
    out = subprocess.run(
        [str(peer_python(venv)), "-c", code, *packages],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(zip(packages, out.stdout.split()))


class PeerServer:
    """WhisperLive's server as a child process (logs to options.log_path)."""

    def __init__(self, options: PeerServerOptions) -> None:
        self.options = options
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def args(self) -> list[str]:
        o = self.options
        return [
            str(peer_python(o.venv)),
            str(LAUNCHER),
            str(self.port),
            str(o.model_dir),
            str(o.max_clients),
        ]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = START_TIMEOUT_S) -> PeerServer:
        self.options.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.options.threads)}
        with self.options.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout_s
        while not _listening(self.port):
            if self.process.poll() is not None:
                code, log = self.process.returncode, self.options.log_path
                raise RuntimeError(f"the WhisperLive server exited with {code}; see {log}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the WhisperLive server did not listen in {timeout_s:.0f} s")
            time.sleep(POLL_S)
        return self

    def stop(self) -> int | None:
        """SIGTERM (it has no drain to wait for), SIGKILL if it lingers."""
        return stop_process(self.process, STOP_TIMEOUT_S)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0
