"""Real, private ``redis-server`` processes for tests: own ports, own temp dirs, no persistence.

>>> server = RedisServer(tmp_path)        # doctest: +SKIP
>>> server.start(); server.url            # doctest: +SKIP
'redis://127.0.0.1:39211/0'
>>> server.kill(); server.start()         # same port, empty again  # doctest: +SKIP
>>> server.stop()                         # doctest: +SKIP

>>> cluster = RedisCluster(tmp_path)      # three masters, every slot covered  # doctest: +SKIP
>>> cluster.start(); cluster.url          # doctest: +SKIP
'redis+cluster://127.0.0.1:39213,127.0.0.1:39217,127.0.0.1:39221'

Without ``redis-server`` on PATH the tests skip, except under CI (``CI`` set),
where a missing server is a broken setup and fails loudly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from overdrive._asgi_server import free_port

__all__ = ["RedisCluster", "RedisServer", "require_redis_server"]

_STARTUP_DEADLINE = 10.0
_SLOTS = 16384


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
    """One ``redis-server`` process on a fixed loopback port, restartable on that port.

    ``options`` are extra ``--name value`` arguments for the server (a cluster node's, say).
    """

    __slots__ = ("_binary", "_dir", "_options", "_proc", "port")

    def __init__(
        self, directory: Path, binary: str | None = None, options: tuple[str, ...] = ()
    ) -> None:
        self._binary = binary or require_redis_server()
        self._dir = directory
        self._options = options
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
            *self._options,
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        # A child process gives no readiness signal we can await; probe briefly.
        deadline = time.monotonic() + _STARTUP_DEADLINE
        while not _answers_ping(self.port):
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{self.log()}")
            time.sleep(0.01)

    def log(self) -> str:
        """The tail of the server's log, for a failure message."""
        path = self._dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

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


class RedisCluster:
    """A Redis Cluster of ``masters`` ``redis-server`` processes, no replicas, every slot covered.

    Each node gets an even share of the slots (CLUSTER ADDSLOTSRANGE) and its
    own config epoch, then they MEET; :meth:`start` returns once every node
    reports ``cluster_state:ok``. The cluster bus port is chosen free too
    (``--cluster-port``), not derived as port + 10000, which may not exist.
    """

    __slots__ = ("_bus_ports", "nodes")

    def __init__(self, directory: Path, masters: int = 3) -> None:
        binary = require_redis_server()
        self._bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            self._node(directory / f"node{index}", binary, bus_port)
            for index, bus_port in enumerate(self._bus_ports)
        ]

    @staticmethod
    def _node(directory: Path, binary: str, bus_port: int) -> RedisServer:
        directory.mkdir(parents=True, exist_ok=True)
        options = (
            *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
            *("--cluster-config-file", str(directory / "nodes.conf")),
            *("--cluster-node-timeout", "5000"),
        )
        return RedisServer(directory, binary, options)

    @property
    def url(self) -> str:
        """The URL overdrive takes for this cluster: every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        try:
            self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> None:
        clients = [redis.Redis(port=node.port) for node in self.nodes]
        try:
            share = _SLOTS // len(clients)
            for index, client in enumerate(clients):
                last = _SLOTS - 1 if index == len(clients) - 1 else (index + 1) * share - 1
                _cluster(client, "ADDSLOTSRANGE", index * share, last)
                # Distinct epochs up front: no collision for the nodes to settle first.
                _cluster(client, "SET-CONFIG-EPOCH", index + 1)
            for client in clients[1:]:
                # The bus port is named: it is not the default port + 10000.
                meet = ("127.0.0.1", self.nodes[0].port, self._bus_ports[0])
                _cluster(client, "MEET", *meet)
            self._wait_ok(clients)
        finally:
            for client in clients:
                client.close()

    def _wait_ok(self, clients: list[redis.Redis]) -> None:
        # Gossip gives no signal to await; poll until every node agrees.
        deadline = time.monotonic() + _STARTUP_DEADLINE
        while not all(_cluster_ok(client, len(clients)) for client in clients):
            if time.monotonic() > deadline:
                logs = "\n".join(node.log() for node in self.nodes)
                raise RuntimeError(f"the cluster did not form:\n{logs}")
            time.sleep(0.02)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __repr__(self) -> str:
        return f"RedisCluster(ports={[node.port for node in self.nodes]})"


def _cluster(client: redis.Redis, *args: str | int) -> Any:
    """A ``CLUSTER`` subcommand on one node (redis-py types these only on its cluster client)."""
    execute: Callable[..., Any] = client.execute_command
    return execute("CLUSTER", *args)


def _cluster_ok(client: redis.Redis, masters: int) -> bool:
    info = _cluster(client, "INFO").decode()
    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(masters)
