"""One engine, many event loops: ``asyncio.run`` twice, a thread's loop, a closed one, two at once.

Every test here is guarded by a timeout: the failure this prevents is a hang.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import openai
import pytest

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer
from tests.redis_server import RedisServer

CHAT = "gpt-4o-mini"
T = TypeVar("T")
PATIENCE_S = 10.0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(seed=5, ttft_s=0.0, per_token_s=0.0005, models=(CHAT,))) as server:
        yield server


@pytest.fixture
def od(sim: SimServer) -> Iterator[Overdrive]:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    engine = Overdrive.from_config({"upstreams": [upstream], "cache": {"disk": None}})
    yield engine
    engine.close()


def chats(sim: SimServer) -> int:
    return int(sim.stats()["requests"].get("/v1/chat/completions", 0))


def in_thread(work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own, failing the test (not hanging it) past the patience."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", work()))
        except BaseException as exc:
            box.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    assert box, "the call hung"
    kind, value = box[0]
    if kind == "error":
        raise value
    return cast(T, value)


def ask(client: openai.AsyncOpenAI, word: str) -> Callable[[], str]:
    async def one() -> str:
        messages: Any = [{"role": "user", "content": word}]
        answer = await client.chat.completions.create(model=CHAT, messages=messages)
        return answer.choices[0].message.content or ""

    return lambda: asyncio.run(one())


def client_of(od: Overdrive) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://127.0.0.1:9/v1", api_key="u", http_client=od.http_client()
    )


def test_two_asyncio_runs_on_one_module_level_engine_and_client(
    od: Overdrive, sim: SimServer
) -> None:
    client = client_of(od)
    first = in_thread(ask(client, "one"))
    cached = in_thread(ask(client, "one"))  # a second loop: from the cache
    fresh = in_thread(ask(client, "two"))  # a second loop: from the upstream, on a new pool
    third = in_thread(ask(client, "three"))
    assert first == cached
    assert fresh != first
    assert third
    assert chats(sim) == 3


def test_a_thread_with_its_own_loop_after_the_first_closed(od: Overdrive, sim: SimServer) -> None:
    client = client_of(od)
    in_thread(ask(client, "main"))

    def own_loop() -> str:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(
                client.chat.completions.create(
                    model=CHAT, messages=[{"role": "user", "content": "thread"}]
                )
            ).id
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    assert in_thread(own_loop)
    assert in_thread(ask(client, "main again"))
    assert chats(sim) == 3


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_loop_closed_without_shutting_down(od: Overdrive, sim: SimServer) -> None:
    """``loop.close()`` alone runs no cleanup: its pooled sockets die with it (their warnings
    are that loop's), and the engine goes on afresh on the next loop."""
    client = client_of(od)

    def bare() -> str:
        loop = asyncio.new_event_loop()
        messages: Any = [{"role": "user", "content": "bare"}]
        answer = loop.run_until_complete(
            client.chat.completions.create(model=CHAT, messages=messages)
        )
        loop.close()
        return answer.id

    assert in_thread(bare)
    assert in_thread(ask(client, "after the bare close"))
    assert chats(sim) == 2
    gc.collect()  # the dead loop's transports warn here, under this test's filters


def test_two_live_loops_at_once_get_correct_answers(od: Overdrive, sim: SimServer) -> None:
    """A call from a loop other than the engine's live one runs on the engine's, and comes back."""
    client = client_of(od)
    home_ready, release = threading.Event(), threading.Event()

    async def home() -> str:
        answer = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "home"}]
        )
        home_ready.set()
        await asyncio.to_thread(release.wait, PATIENCE_S)  # keep this loop alive and serving
        return answer.id

    async def visitor() -> tuple[str, str]:
        whole = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "visitor"}]
        )
        stream = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "visitor stream"}], stream=True
        )
        words = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return whole.choices[0].message.content or "", "".join(words)

    holder = threading.Thread(target=lambda: asyncio.run(home()), daemon=True)
    holder.start()
    assert home_ready.wait(PATIENCE_S)
    try:
        whole, streamed = in_thread(lambda: asyncio.run(visitor()))
    finally:
        release.set()
        holder.join(PATIENCE_S)
    assert whole
    assert streamed
    assert chats(sim) == 3


def test_redis_connections_move_to_the_next_loop(sim: SimServer, redis_server: RedisServer) -> None:
    """The shared cache, its lease and the shared limiter dial again on a second loop."""
    import redis

    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT], "rpm": 6000}
    config = {
        "redis_url": redis_server.url,
        "upstreams": [upstream],
        "cache": {"disk": None, "redis_url": redis_server.url},
    }
    od = Overdrive.from_config(config)
    try:
        client = client_of(od)
        first = in_thread(ask(client, "one"))
        stored = redis.Redis.from_url(redis_server.url).dbsize()
        fresh = in_thread(ask(client, "two"))  # a miss: Redis tier, lease, limiter on a new loop
        assert first
        assert fresh != first
        assert chats(sim) == 2
        assert redis.Redis.from_url(redis_server.url).dbsize() > stored  # written from loop two
    finally:
        od.close()
