"""``@cached``: one decorator for sync and async functions and methods.

>>> from overdrive import cached
>>> @cached(ttl=60)
... def square(x: int) -> int:
...     return x * x
>>> square(4), square(4), square.cache_info().hits
(16, 16, 1)

Async functions get in-process single-flight (concurrent misses on one key
compute once), stale-while-revalidate and the shared L2 tiers when the cache
has them; sync functions use the in-memory tier. A memory hit is served
inline by the wrapper; everything past it (lookup, refresh, compute once,
store) is the cache stage the engine runs too, :class:`~overdrive.cache.CacheStage`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import random
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, cast

from .._errors import RequestError
from .._json import dumps_canonical
from .._units import parse_bytes, parse_duration
from ..cache import CachedItem, CacheStage, MemoryCache, TieredCache
from ..coalesce import ThreadFlight

__all__ = ["CacheInfo", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
KeyFunc = Callable[..., Hashable]
TagFunc = Callable[..., Iterable[str]]

DEFAULT_MEMORY = "64MB"


@dataclass(slots=True, frozen=True)
class CacheInfo:
    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int


class _Raised:
    """A cached failure (negative caching): re-raised on every hit."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def cached(
    ttl: float | str = 3600.0,
    *,
    key: KeyFunc | None = None,
    tags: Iterable[str] | TagFunc = (),
    stale: float | str = 0.0,
    negative_ttl: float | str | None = None,
    negative_on: tuple[type[BaseException], ...] = (LookupError,),
    jitter: float = 0.1,
    cache: TieredCache | MemoryCache[Any] | None = None,
    max_bytes: int | str = DEFAULT_MEMORY,
    namespace: str = "",
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache a function's results for ``ttl`` seconds (sync or async, plain or method).

    ``key(*args, **kwargs)`` replaces the default key (the arguments, minus
    ``self``/``cls`` for methods). ``tags`` (or ``tags(*args, **kwargs)``)
    label entries for ``invalidate_tags``. ``stale`` seconds past the TTL an
    entry is still served while one background refresh runs. With
    ``negative_ttl``, ``None`` results and ``negative_on`` errors are cached
    that long (errors are re-raised on a hit). ``jitter`` spreads expiry by up
    to that share of the TTL so entries written together do not expire together.
    """
    policy = _Policy(
        parse_duration(ttl),
        parse_duration(stale),
        None if negative_ttl is None else parse_duration(negative_ttl),
        negative_on,
    )

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        store = cache if cache is not None else MemoryCache(parse_bytes(max_bytes))
        memo = _Memo(fn, policy, store, key, tags, namespace, jitter)
        wrapper: Any = (
            memo.async_wrapper() if inspect.iscoroutinefunction(fn) else memo.sync_wrapper()
        )
        functools.update_wrapper(wrapper, fn)
        wrapper.cache_info = memo.info
        wrapper.invalidate = memo.invalidate
        wrapper.invalidate_tags = memo.invalidate_tags
        wrapper.cache = memo
        return cast("Callable[P, R]", wrapper)

    return decorate


@dataclass(slots=True, frozen=True)
class _Policy:
    ttl: float
    stale: float
    negative_ttl: float | None
    negative_on: tuple[type[BaseException], ...]

    def ttl_of(self, value: Any) -> float:
        """The TTL before jitter: ``negative_ttl`` for None and cached failures, if set."""
        negative = value is None or isinstance(value, _Raised)
        return self.negative_ttl if negative and self.negative_ttl is not None else self.ttl


class _Memo(Generic[P, R]):
    """The state behind one decorated function."""

    def __init__(
        self,
        fn: Callable[P, R],
        policy: _Policy,
        store: TieredCache | MemoryCache[Any],
        key: KeyFunc | None,
        tags: Iterable[str] | TagFunc,
        namespace: str,
        jitter: float,
    ) -> None:
        self.fn = fn
        self.policy = policy
        # Entries other processes may read need keys that are stable bytes.
        self.shared = isinstance(store, TieredCache)
        tiered = store if isinstance(store, TieredCache) else TieredCache(store)
        self.memory: MemoryCache[Any] = tiered.memory
        self.stage: CacheStage[Any] = CacheStage(tiered, jitter=jitter, rng=random.Random())
        self.custom_key = key
        self.tags = tags
        self.prefix = f"{namespace}\x1f{fn.__module__}.{fn.__qualname__}"
        self.skip_first = _is_method(fn)
        self.thread_flight: ThreadFlight[Any] = ThreadFlight()
        self.hits = 0
        self.misses = 0

    # -- keys --------------------------------------------------------------

    def key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        """A tuple key for memory-only caches; stable bytes when entries are shared."""
        if self.custom_key is not None:
            raw: Any = self.custom_key(*args, **kwargs)
        else:
            raw = args[1:] if self.skip_first else args
            if kwargs:
                raw = (*raw, _KWARGS, *sorted(kwargs.items()))
        if self.shared:
            return self._stable(raw)
        try:
            hash(raw)
        except TypeError:  # lists or dicts among the arguments: key by content
            return self._stable(raw)
        return (self.prefix, raw)

    def _stable(self, raw: Any) -> bytes:
        try:
            material = dumps_canonical([self.prefix, raw])
        except TypeError as exc:
            raise RequestError(
                "key",
                f"arguments of {self.fn.__qualname__} cannot form a cache key ({exc}); pass key=",
            ) from None
        return hashlib.blake2b(material, digest_size=16).digest()

    def tags_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        tags = self.tags(*args, **kwargs) if callable(self.tags) else self.tags
        return tuple(tags)

    # -- sync --------------------------------------------------------------

    def fast_key(self) -> Callable[[tuple[Any, ...], dict[str, Any]], Hashable]:
        """The hit path's key function: a bare tuple when nothing more is needed."""
        if self.custom_key is not None or self.shared or self.skip_first:
            return self.key_of
        prefix, key_of = self.prefix, self.key_of

        def positional(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
            # Unhashable arguments surface as TypeError at lookup; see _lookup_key.
            return key_of(args, kwargs) if kwargs else (prefix, args)

        return positional

    def _lookup_key(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Hashable, CachedItem[Any] | None]:
        """The slow path of a lookup whose fast key was unhashable."""
        key = self.key_of(args, kwargs)
        return key, self.memory.get_entry(key)

    # The sync and async wrappers repeat the hit path on purpose: a shared
    # helper would add a call to every hit, the one cost this decorator exists to avoid.

    def sync_wrapper(self) -> Callable[..., Any]:
        get = self.memory.get_entry
        now = self.memory.clock.now
        key_of = self.fast_key()

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = key_of(args, kwargs)
            try:
                item = get(key)
            except TypeError:
                key, item = self._lookup_key(args, kwargs)
            if item is not None and item.expires_at > now():
                self.hits += 1
                value = item.value
                if value.__class__ is _Raised:
                    raise value.error
                return value
            return self._miss_sync(key, args, kwargs)

        return wrapper

    def _miss_sync(self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.misses += 1
        value, _ = self.thread_flight.run(key, lambda: self._compute_sync(key, args, kwargs))
        return _unwrap(value)

    def _compute_sync(self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = cast("Callable[..., Any]", self.fn)
        try:
            value = fn(*args, **kwargs)
        except self.policy.negative_on as exc:
            value = _Raised(exc)
        self._remember(key, value, args, kwargs)
        return value

    def _remember(
        self, key: Hashable, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if isinstance(value, _Raised) and self.policy.negative_ttl is None:
            return
        ttl, stale = self.policy.ttl_of(value), self.policy.stale
        self.stage.remember(key, value, ttl, stale=stale, tags=self.tags_of(args, kwargs))

    # -- async -------------------------------------------------------------

    def async_wrapper(self) -> Callable[..., Awaitable[Any]]:
        get = self.memory.get_entry
        now = self.memory.clock.now
        key_of = self.fast_key()

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = key_of(args, kwargs)
            try:
                item = get(key)
            except TypeError:
                key, item = self._lookup_key(args, kwargs)
            if item is not None and item.expires_at > now():
                self.hits += 1
                value = item.value
                if value.__class__ is _Raised:
                    raise value.error
                return value
            return await self._miss_async(key, args, kwargs)

        return wrapper

    async def _miss_async(
        self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        stage = self.stage
        found = await stage.lookup(key)
        if found is not None:  # stale in memory, or found in a shared tier
            self.hits += 1
            if not found.fresh:
                stage.refresh_once(key, lambda: self._compute(key, args, kwargs))
            return _unwrap(found.value)
        self.misses += 1
        value, _ = await stage.compute_once(key, lambda: self._compute(key, args, kwargs), _same)
        return _unwrap(value)

    async def _compute(self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = cast("Callable[..., Awaitable[Any]]", self.fn)
        try:
            value: Any = await fn(*args, **kwargs)
        except self.policy.negative_on as exc:
            value = _Raised(exc)
        await self._store(key, value, args, kwargs)
        return value

    async def _store(
        self, key: Hashable, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        if isinstance(value, _Raised):  # a failure is re-raised in this process only
            self._remember(key, value, args, kwargs)
            return
        ttl, stale = self.policy.ttl_of(value), self.policy.stale
        await self.stage.store(key, value, ttl, stale=stale, tags=self.tags_of(args, kwargs))

    # -- inspection and invalidation ----------------------------------------

    def info(self) -> CacheInfo:
        memory = self.memory
        return CacheInfo(self.hits, self.misses, len(memory), memory.bytes_used, memory.max_bytes)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Drop the entry these arguments map to (from memory; shared tiers in the background)."""
        key = self.key_of(args, kwargs)
        removed = self.memory.delete(key)
        if self.shared:
            _spawn(self.stage.cache.delete(key))
        return removed

    async def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry labelled with any of ``tags``, in every tier."""
        return await self.stage.cache.invalidate_tags(tags)


_KWARGS = "\x00kwargs"  # separates positional from keyword arguments in a key
_BACKGROUND: set[asyncio.Future[Any]] = set()


def _same(value: Any) -> Any:
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, _Raised):
        raise value.error
    return value


def _is_method(fn: Callable[..., Any]) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] in ("self", "cls") and "." in fn.__qualname__


def _spawn(work: Awaitable[Any]) -> None:
    """Run ``work`` on the running loop without waiting; keep a reference until done."""
    try:
        task = asyncio.ensure_future(work)
    except RuntimeError:  # no running loop: a sync caller; memory is already updated
        if inspect.iscoroutine(work):
            work.close()
        return
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
