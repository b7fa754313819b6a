"""A real, private ``redis-server`` for tests: own loopback port, own temp dir, no persistence.

>>> server = RedisServer(tmp_path)        # doctest: +SKIP
>>> server.start(); server.url            # doctest: +SKIP
'redis://127.0.0.1:39211/0'
>>> server.kill(); server.start()         # same port, empty again  # doctest: +SKIP
>>> server.stop()                         # doctest: +SKIP

Without ``redis-server`` on PATH the tests skip, except under CI (``CI`` set),
where a missing server is a broken setup and fails loudly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from overdrive._asgi_server import free_port

__all__ = ["RedisServer", "require_redis_server"]

_STARTUP_DEADLINE = 10.0


def require_redis_server() -> str:
    """The path of ``redis-server``; skips the test (fails it under CI) when absent."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    message = (
        "redis-server is not installed (Debian: apt-get install redis-server; "
        "scripts/test installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}: required under CI", pytrace=False)
    pytest.skip(message)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on a fixed loopback port, restartable on that port."""

    __slots__ = ("_binary", "_dir", "_proc", "port")

    def __init__(self, directory: Path, binary: str | None = None) -> None:
        self._binary = binary or require_redis_server()
        self._dir = directory
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self._proc is None, "already running"
        args = [
            self._binary,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self._dir)),
            *("--logfile", str(self._dir / "redis.log")),
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        # A child process gives no readiness signal we can await; probe briefly.
        deadline = time.monotonic() + _STARTUP_DEADLINE
        while not _answers_ping(self.port):
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (self._dir / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.01)

    def kill(self) -> None:
        """Die abruptly (SIGKILL), as a crashed or unplugged server would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __repr__(self) -> str:
        state = "running" if self._proc is not None else "stopped"
        return f"RedisServer(port={self.port}, {state})"
