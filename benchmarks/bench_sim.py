"""Throughput of the simulated upstream on loopback, against a bare uvicorn floor.

The sim runs with zero latency so only its own overhead is measured. Load comes
from several client processes, each a raw asyncio HTTP/1.1 keep-alive loop, so
the client does not cap the figure. The floor is a static-response ASGI app on
the same uvicorn settings: the ratio says what the sim costs above uvicorn.

Run: ``python benchmarks/bench_sim.py [--seconds 3] [--clients 2] [--connections 32]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
import uvloop

from overdrive._asgi_server import uvicorn_config
from overdrive._json import dumps
from overdrive.sim import SimApp, SimConfig
from overdrive.sim._app import ASGIApp

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Result = tuple[int, list[float]]

_FLOOR_BODY = b'{"ok":true}'
_PROMPTS = 64  # distinct prompts, so answers are not one cached string


async def floor_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """The least an ASGI app can do per request: read the body, send a fixed answer."""
    if scope["type"] != "http":
        return
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _FLOOR_BODY})


def serve(kind: str, sock: socket.socket) -> None:
    """Serve one app on the sim's own uvicorn settings, so only the app differs."""
    app: ASGIApp = floor_app if kind == "floor" else SimApp(zero_latency())
    host, port = sock.getsockname()
    uvicorn.Server(uvicorn_config(app, host, port)).run(sockets=[sock])


def zero_latency() -> SimConfig:
    return SimConfig(ttft_s=0.0, per_token_s=0.0, embed_base_s=0.0, embed_per_item_s=0.0)


def chat_requests(port: int) -> list[bytes]:
    requests = []
    for i in range(_PROMPTS):
        body = dumps(
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You are a terse assistant."},
                    {"role": "user", "content": f"Question number {i}: what is the answer?"},
                ],
            }
        )
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def connection(port: int, requests: list[bytes], until: float, offset: int) -> Result:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    i = offset
    while (start := time.perf_counter()) < until:
        writer.write(requests[i % len(requests)])
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(_content_length(head))
        latencies.append(time.perf_counter() - start)
        assert head.startswith(b"HTTP/1.1 200"), head[:40]
        i += 1
    writer.close()
    return len(latencies), latencies


def _content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    raise ValueError("response without content-length")


async def load(port: int, connections: int, seconds: float, warmup: float) -> Result:
    requests = chat_requests(port)
    # Warm the server (and our connections) before the clock that counts starts.
    await asyncio.gather(
        *(connection(port, requests, time.perf_counter() + warmup, c) for c in range(4))
    )
    until = time.perf_counter() + seconds
    results = await asyncio.gather(
        *(connection(port, requests, until, c * 7) for c in range(connections))
    )
    return sum(n for n, _ in results), [x for _, lat in results for x in lat]


def client(port: int, connections: int, seconds: float, warmup: float) -> Result:
    return uvloop.run(load(port, connections, seconds, warmup))


def measure(kind: str, args: argparse.Namespace) -> tuple[float, float]:
    """Requests per second and p50 latency (ms) for one server kind."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    server = multiprocessing.Process(target=serve, args=(kind, sock), daemon=True)
    server.start()
    try:
        with multiprocessing.Pool(args.clients) as pool:
            jobs = [(port, args.connections, args.seconds, args.warmup)] * args.clients
            results = pool.starmap(client, jobs)
    finally:
        server.terminate()
        server.join()
        sock.close()
    total = sum(n for n, _ in results)
    latencies = [x for _, lat in results for x in lat]
    return total / args.seconds, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections each")
    args = parser.parse_args()
    rows = {kind: measure(kind, args) for kind in ("floor", "sim")}
    floor_rps = rows["floor"][0]
    print(f"{'server':<38} {'req/s':>9} {'p50 ms':>8} {'vs floor':>9}")
    labels = {"floor": "uvicorn floor (static ASGI answer)", "sim": "overdrive.sim chat completion"}
    for kind, (rps, p50) in rows.items():
        print(f"{labels[kind]:<38} {rps:>9.0f} {p50:>8.2f} {rps / floor_rps:>8.2f}x")


if __name__ == "__main__":
    main()
