"""Which entries could pass the guard's content gate, known before anything is embedded.

The content gate refuses a candidate when either text adds more than
``limit`` times the shorter text's content words. So a candidate must share
at least ``(1 - limit)`` of the query's content words, or it is refused
whatever its cosine. :class:`ContentWords` keeps, per scope, which entries
hold each content word; a lookup whose words no entry shares enough of is a
miss without embedding the question, which is most of a lookup's cost.

>>> words = ContentWords()
>>> words.add(b"scope", 1, frozenset({"reset", "password"}))
>>> words.could_pass(b"scope", frozenset({"reset", "password"}), 0.25)
True
>>> words.could_pass(b"scope", frozenset({"museum", "open", "friday"}), 0.25)
False
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet

__all__ = ["MAX_CANDIDATES", "ContentWords"]

# Past this many entries to count, a lookup is embedded instead: counting
# would cost more than the model (tens of microseconds per thousand).
MAX_CANDIDATES = 2000


class _Scope:
    __slots__ = ("by_word", "wordless")

    def __init__(self) -> None:
        self.by_word: dict[str, set[int]] = {}
        self.wordless: set[int] = set()  # entries with no content word at all

    def __bool__(self) -> bool:
        return bool(self.by_word or self.wordless)


class ContentWords:
    """Per scope, the entries holding each content word."""

    __slots__ = ("_scopes", "_words_of")

    def __init__(self) -> None:
        self._scopes: dict[bytes, _Scope] = {}
        self._words_of: dict[int, tuple[bytes, frozenset[str]]] = {}

    def add(self, scope: bytes, ident: int, words: frozenset[str]) -> None:
        self.remove(ident)
        held = self._scopes.setdefault(scope, _Scope())
        if not words:
            held.wordless.add(ident)
        for word in words:
            held.by_word.setdefault(word, set()).add(ident)
        self._words_of[ident] = (scope, words)

    def remove(self, ident: int) -> None:
        found = self._words_of.pop(ident, None)
        if found is None:
            return
        scope, words = found
        held = self._scopes[scope]
        held.wordless.discard(ident)
        for word in words:
            idents = held.by_word[word]
            idents.discard(ident)
            if not idents:
                del held.by_word[word]
        if not held:
            del self._scopes[scope]

    def could_pass(self, scope: bytes, words: frozenset[str], limit: float) -> bool:
        """Whether an entry of ``scope`` shares enough of ``words`` to pass a gate at ``limit``."""
        held = self._scopes.get(scope)
        if held is None:
            return False
        if not words:  # only an entry with no content word adds none
            return bool(held.wordless)
        needed = math.ceil((1.0 - limit) * len(words) - 1e-9)
        if needed <= 0:
            return True
        # An entry sharing `needed` of the words holds one of any len - needed + 1
        # of them: only the rarest few are looked at, and each entry found once.
        postings: list[AbstractSet[int]] = sorted(
            (held.by_word.get(word, frozenset()) for word in words), key=len
        )
        seen = postings[: len(words) - needed + 1]
        if sum(map(len, seen)) > MAX_CANDIDATES:
            return True  # too common to count cheaply: let the embedding decide
        candidates = set().union(*seen)
        return any(len(words & self._words_of[ident][1]) >= needed for ident in candidates)

    def clear(self) -> None:
        self._scopes.clear()
        self._words_of.clear()

    def __len__(self) -> int:
        return len(self._words_of)

    def __repr__(self) -> str:
        return f"ContentWords(entries={len(self._words_of)}, scopes={len(self._scopes)})"
