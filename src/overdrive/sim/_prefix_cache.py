"""The automatic prompt prefix cache of one simulated deployment: bounded, LRU by block.

What a serving machine does with prompts it has seen (vLLM's and SGLang's KV
prefix cache, OpenAI's automatic prompt caching): a prompt's tokens are cut
into blocks; block i's key is a chained hash of every token up to its end, so
two prompts share a key exactly when they share every token up to there. A
prompt finds the longest chain of its keys already cached (the prefill of
those tokens is skipped), and once its own prefill is done its full blocks are
cached. Prompts shorter than ``min_tokens`` are neither served from the cache
nor put in it, and a hit is reported only from ``min_tokens`` on, in whole
blocks, as OpenAI does (1,024 tokens, then 128 at a time).

The sim has no tokenizer: it prices text at four characters a token
(:mod:`overdrive._tokens`). So a prompt's tokens are a text read four
characters at a time (:class:`PromptTokens`): each message (or input item)
opens with four tokens of framing, a digest of everything in it but the text
it is priced by, then that text, padded to whole tokens. Two prompts that
share their leading messages share that many leading tokens, and the count is
the ``prompt_tokens`` the sim reports.

>>> cache = PrefixCache(4096, block_tokens=128, min_tokens=1024)
>>> prompt = PromptTokens("m", [framing({"role": "user"}), padded("word " * 1600)])
>>> prompt.tokens
2004
>>> first = cache.look_up(prompt)
>>> first.cached_tokens, first.uncached_tokens
(0, 2004)
>>> first.done()  # prefilled: its 15 full blocks are cached
>>> cache.look_up(prompt).cached_tokens
1920
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from overdrive._json import dumps_canonical

__all__ = [
    "FRAMING_TOKENS",
    "TOKEN_CHARS",
    "Prefill",
    "PrefixCache",
    "PromptTokens",
    "framing",
    "padded",
]

# Characters a token, as overdrive._tokens prices text; a test checks they agree.
TOKEN_CHARS = 4
# Tokens of framing a chat message or input item costs (its role, separators).
FRAMING_TOKENS = 4
_KEY_BYTES = 16


class PromptTokens:
    """A prompt as the sim tokenizes it: ``text`` read ``TOKEN_CHARS`` characters a token.

    ``context`` is what shapes every token yet costs none in the sim's count
    (the model, the tools offered): it seeds the chain, so prompts that differ
    there share no block.
    """

    __slots__ = ("seed", "text")

    def __init__(self, context: Any, pieces: Iterable[str]) -> None:
        self.seed = hashlib.blake2b(_canonical(context), digest_size=_KEY_BYTES).digest()
        self.text = "".join(pieces)

    @property
    def tokens(self) -> int:
        return len(self.text) // TOKEN_CHARS

    def block_keys(self, block_tokens: int) -> list[bytes]:
        """The chained key of each full block: key i covers every token up to block i's end."""
        chain = hashlib.blake2b(self.seed, digest_size=_KEY_BYTES)
        step, text = block_tokens * TOKEN_CHARS, self.text
        keys = []
        for end in range(step, len(text) + 1, step):
            # surrogatepass: JSON may carry a lone surrogate, and it is a token all the same.
            chain.update(text[end - step : end].encode("utf-8", "surrogatepass"))
            keys.append(chain.copy().digest())
        return keys

    def __repr__(self) -> str:
        return f"PromptTokens(tokens={self.tokens})"


def framing(item: dict[str, Any], priced: tuple[str, ...] = ("content",)) -> str:
    """The ``FRAMING_TOKENS`` tokens opening ``item``: a digest of all of it but its priced text.

    The fields in ``priced`` are the ones whose text the sim counts as tokens
    (and which follow as tokens of their own); their text is left out here, but
    not what surrounds it (the role, a tool call, an image part, their order),
    so two items that differ anywhere differ from their framing on.
    """
    rest = {key: _without_text(value) if key in priced else value for key, value in item.items()}
    digest = hashlib.blake2b(_canonical(rest), digest_size=FRAMING_TOKENS * TOKEN_CHARS // 2)
    return digest.hexdigest()


def padded(text: str) -> str:
    """``text`` as whole tokens: a partial last token is filled out, as it is priced whole."""
    return text + "\0" * (-len(text) % TOKEN_CHARS)


def _without_text(value: Any) -> Any:
    if isinstance(value, str):
        return None
    if isinstance(value, list):
        return [_part_without_text(part) for part in value]
    return value


def _part_without_text(part: Any) -> Any:
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return {**part, "text": None}
    return part


def _canonical(value: Any) -> bytes:
    try:
        return dumps_canonical(value)
    except TypeError:  # nested deeper than the codec writes: repr is as deterministic
        return repr(value).encode("utf-8", "surrogatepass")


class Prefill:
    """One prompt's prefill: how many of its tokens were found cached (their prefill is
    skipped), and, once :meth:`done`, its blocks put in the cache.

    Without a cache (``Prefill(prompt_tokens)``) nothing is cached and nothing stored.
    """

    __slots__ = ("_cache", "_keys", "cached_tokens", "prompt_tokens")

    def __init__(
        self,
        prompt_tokens: int,
        cached_tokens: int = 0,
        cache: PrefixCache | None = None,
        keys: list[bytes] | None = None,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self._cache = cache
        self._keys = keys or []

    @property
    def uncached_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def stores(self) -> bool:
        """Whether :meth:`done` puts blocks in a cache."""
        return self._cache is not None and bool(self._keys)

    def done(self) -> None:
        """The prefill is over: the prompt's blocks are in the cache from now on."""
        if self._cache is not None:
            self._cache.insert(self._keys)

    def __repr__(self) -> str:
        return f"Prefill(cached={self.cached_tokens}/{self.prompt_tokens})"


class PrefixCache:
    """Cached prompt blocks, at most ``capacity_tokens`` worth; the least recently used go first.

    A prompt's blocks are touched last block first, so a prefix is always used
    more recently than any block that extends it: eviction cuts chains from
    their tail, and a cached key always has its whole prefix cached, which is
    what makes the longest-first look-up right.
    """

    __slots__ = ("_blocks", "_max_blocks", "block_tokens", "capacity_tokens", "min_tokens")

    def __init__(
        self, capacity_tokens: int, *, block_tokens: int = 128, min_tokens: int = 1024
    ) -> None:
        self.capacity_tokens = capacity_tokens
        self.block_tokens = block_tokens
        self.min_tokens = min_tokens
        self._max_blocks = capacity_tokens // block_tokens
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def look_up(self, prompt: PromptTokens) -> Prefill:
        """How much of ``prompt`` is cached; its :meth:`Prefill.done` stores the rest."""
        tokens = prompt.tokens
        if tokens < self.min_tokens:
            return Prefill(tokens)  # too short to cache, as upstream: no keys, nothing stored
        keys = prompt.block_keys(self.block_tokens)
        cached = self._cached_blocks(keys) * self.block_tokens
        if cached < self.min_tokens:
            cached = 0
        return Prefill(tokens, cached, self, keys)

    def _cached_blocks(self, keys: list[bytes]) -> int:
        blocks = self._blocks
        for count in range(len(keys), 0, -1):  # longest first: a long hit costs one probe
            if keys[count - 1] in blocks:
                return count
        return 0

    def insert(self, keys: list[bytes]) -> None:
        """Cache these chained blocks (as most recently used), evicting past the capacity."""
        blocks, bound = self._blocks, self._max_blocks
        for key in reversed(keys):
            if key in blocks:
                blocks.move_to_end(key)
                continue
            blocks[key] = None
            if len(blocks) > bound:
                blocks.popitem(last=False)

    @property
    def cached_tokens(self) -> int:
        """Tokens held now: whole blocks, at most ``capacity_tokens``."""
        return len(self._blocks) * self.block_tokens

    def clear(self) -> None:
        self._blocks.clear()

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        return (
            f"PrefixCache({self.cached_tokens}/{self.capacity_tokens} tokens, "
            f"block={self.block_tokens}, min={self.min_tokens})"
        )
