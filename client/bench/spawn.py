"""The server side of `streamstt bench`: spawn `streamstt serve`, wait for it to be SERVING,
sample a process's CPU time and memory from /proc, stop it with SIGTERM."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_LISTENING = re.compile(r"streamstt listening on (\S+):(\d+)")
_WEB = re.compile(r"live captions on https?://(\S+?)/")  # printed before _LISTENING
START_TIMEOUT_S = 180.0  # model load + warm-up on a slow, busy CPU
STOP_TIMEOUT_S = 30.0  # the server's own drain grace is 10 s by default
SAMPLE_INTERVAL_S = 0.25


def wait_serving(target: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll the standard health service until it says SERVING (it turns SERVING only after the
    model has decoded audio once, so the first measured stream pays no warm-up)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | str = "no answer"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.2)
    raise TimeoutError(f"{target} is not SERVING after {timeout_s:.0f} s (last: {last})")


class SpawnedServer:
    """`streamstt serve --port 0 [extra args]` as a child process; its stderr (logs) goes to
    `log_path`, its stdout is read for the bound port."""

    def __init__(self, extra_args: list[str], log_path: Path) -> None:
        self.args = [sys.executable, "-m", "streamstt.client.cli", "serve", "--port", "0"]
        self.args += [a for arg in extra_args for a in shlex.split(arg)]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.target = ""
        self.web_target = ""  # host:port of the WebSocket bridge, when --web-port is set

    def start(self, timeout_s: float = START_TIMEOUT_S) -> SpawnedServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
        )
        log.close()  # the child holds its own descriptor
        found: list[str] = []
        reader = threading.Thread(target=self._read_stdout, args=(found,), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout_s
        while not found:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"streamstt serve exited with {self.process.returncode} before listening; "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"streamstt serve did not print its port in {timeout_s:.0f} s")
            time.sleep(0.1)
        self.target = found[0]
        wait_serving(self.target, max(5.0, deadline - time.monotonic()))
        return self

    def _read_stdout(self, found: list[str]) -> None:
        # Keep draining stdout for the whole run so the child never blocks on a full pipe.
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if web := _WEB.search(line):
                self.web_target = web.group(1)
            match = _LISTENING.search(line)
            if match and not found:
                found.append(f"{match.group(1)}:{match.group(2)}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM (the server drains and exits 0), SIGKILL if it does not within the timeout."""
        return stop_process(self.process, STOP_TIMEOUT_S)


def stop_process(process: subprocess.Popen | None, timeout_s: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout_s`; the exit code (None when never started)."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- /proc sampling ------------------------------------------------------------------------
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat (None when unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    cpu_percent: float | None  # CPU seconds / wall seconds x 100 (200 = two cores busy)
    rss_mb_peak: float | None
    rss_mb_mean: float | None

    def as_dict(self) -> dict:
        return {
            "pid": self.pid,
            "cpu_percent": self.cpu_percent,
            "rss_mb_peak": self.rss_mb_peak,
            "rss_mb_mean": self.rss_mb_mean,
        }


class ProcessSampler:
    """Samples one process's RSS every SAMPLE_INTERVAL_S between start() and stop(), and its
    CPU time at both ends; use as a context manager around one bench level."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0: float | None = None
        self._t0 = 0.0
        self.usage: ProcessUsage | None = None

    def __enter__(self) -> ProcessSampler:
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        cpu1, wall = cpu_seconds(self.pid), time.monotonic() - self._t0
        cpu = None
        if self._cpu0 is not None and cpu1 is not None and wall > 0:
            cpu = round(100.0 * (cpu1 - self._cpu0) / wall, 1)
        mb = [r / 2**20 for r in self._rss]
        self.usage = ProcessUsage(
            self.pid,
            cpu,
            round(max(mb), 1) if mb else None,
            round(sum(mb) / len(mb), 1) if mb else None,
        )

    def _run(self) -> None:
        while True:
            rss = rss_bytes(self.pid)
            if rss is not None:
                self._rss.append(rss)
            if self._stop.wait(SAMPLE_INTERVAL_S):
                return
