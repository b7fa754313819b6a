"""The guard: serve a cached answer to a near question only when no fact tells them apart.

A raw cosine threshold serves "turn off dark mode" the answer to "turn on dark
mode" (cosine 0.9+). The guard asks the similarity first, then each check in
turn compares the facts :func:`~overdrive.cache.semantic.facts_of` pulled out of
the two texts; the first that finds a difference refuses, by name.

>>> from overdrive.cache.semantic._facts import facts_of
>>> guard = Guard()
>>> on, off = facts_of("Turn on dark mode"), facts_of("Turn off dark mode")
>>> guard.judge(0.93, on, off), guard.judge(0.93, on, facts_of("Switch dark mode on"))
('antonyms', None)
>>> Guard(checks=()).judge(0.93, on, off) is None  # cosine alone serves the reversal
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from ._facts import Facts

__all__ = ["CHECKS", "DEFAULT_THRESHOLD", "MAX_CONTENT_CHANGE", "Guard", "content_agrees", "reason"]

# Both tuned on MRPC train+dev, every check on:
#     python benchmarks/bench_semantic.py --split train+dev --sweep
# gives pairwise precision 0.956 at recall 0.182 here. Once the checks are on, the
# content limit moves precision far more than the threshold does (0.6 to 0.85 all
# land within 0.003 of it); the threshold stays as a floor for unrelated texts.
DEFAULT_THRESHOLD = 0.75
# The most content words one text may add, as a share of the shorter text's words.
MAX_CONTENT_CHANGE = 0.25


def _negation(query: Facts, cached: Facts) -> bool:
    return query.negations == cached.negations


def _numbers(query: Facts, cached: Facts) -> bool:
    return query.numbers == cached.numbers


def _dates(query: Facts, cached: Facts) -> bool:
    # A changed date, not an added one: news paraphrases drop "on Monday" freely.
    return query.dates <= cached.dates or cached.dates <= query.dates


def _entities(query: Facts, cached: Facts) -> bool:
    # A name replaced by another refuses; one text naming more is the content
    # gate's to weigh. A name is sought among all the other text's words, not its
    # names: a sentence's first word is capitalised anyway ("Bob sued Alice").
    return query.entities <= cached.words or cached.entities <= query.words


def _antonyms(query: Facts, cached: Facts) -> bool:
    # A family both texts speak of must keep its sides: "turn on" vs "switch off"
    # refuses, "turn on" vs "enable" serves. A family only one text has is left
    # to the content gate (its words are content words).
    shared = {side[:-1] for side in query.polar} & {side[:-1] for side in cached.polar}
    return all(_sides(query, family) == _sides(cached, family) for family in shared)


def _sides(facts: Facts, family: str) -> set[str]:
    return {side for side in facts.polar if side[:-1] == family}


def _order(query: Facts, cached: Facts) -> bool:
    # The same names in another order: "Alice sued Bob" and "Bob sued Alice".
    if len(query.order) < 2 or set(query.order) != set(cached.order):
        return True
    return query.order == cached.order


def _roles(query: Facts, cached: Facts) -> bool:
    # A word in a slot in both texts must keep one: "from Paris" vs "to Paris" refuses.
    mine = _slots(query)
    theirs = _slots(cached)
    return all(mine[word] & theirs[word] for word in mine.keys() & theirs.keys())


def _slots(facts: Facts) -> dict[str, set[str]]:
    slots: dict[str, set[str]] = {}
    for word, slot in facts.roles:
        slots.setdefault(word, set()).add(slot)
    return slots


def content_agrees(query: Facts, cached: Facts, limit: float = MAX_CONTENT_CHANGE) -> bool:
    """At most ``limit`` times the shorter text's content words added by either text.

    "reset my password" vs "reset my password on Android" adds one word to two:
    a change of 0.5.
    """
    added = max(len(query.content - cached.content), len(cached.content - query.content))
    return added <= limit * max(1, min(len(query.content), len(cached.content)))


_CHECKS: dict[str, tuple[Callable[[Facts, Facts], bool], str]] = {
    "negation": (_negation, "one of the texts negates what the other asserts"),
    "numbers": (_numbers, "the texts name different numbers"),
    "dates": (_dates, "the texts name different dates or times"),
    "entities": (_entities, "a name, identifier or quoted string occurs in only one text"),
    "antonyms": (_antonyms, "the texts take opposite sides (on/off, before/after, ...)"),
    "order": (_order, "the texts name the same names in a different order"),
    "roles": (_roles, "a word fills a different role (from X to Y, X than Y)"),
    "content": (content_agrees, "one text adds too many content words to the other"),
}
CHECKS: tuple[str, ...] = tuple(_CHECKS)


def reason(refusal: str) -> str:
    """A short human reason for a refusal the guard returned.

    >>> reason("numbers")
    'the texts name different numbers'
    """
    if refusal == "similarity":
        return "the texts are not similar enough"
    return _CHECKS[refusal][1]


class Guard:
    """The similarity threshold and the fact checks in force; :meth:`judge` applies them."""

    __slots__ = ("_tests", "checks", "max_content_change", "threshold")

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        checks: Iterable[str] | None = None,
        max_content_change: float = MAX_CONTENT_CHANGE,
    ) -> None:
        self.threshold = threshold
        self.max_content_change = max_content_change
        self.checks: tuple[str, ...] = CHECKS if checks is None else tuple(checks)
        unknown = [name for name in self.checks if name not in _CHECKS]
        if unknown:
            raise ValueError(f"unknown guard checks {unknown}; known: {', '.join(CHECKS)}")
        self._tests = tuple((name, self._test(name)) for name in self.checks)

    def _test(self, name: str) -> Callable[[Facts, Facts], bool]:
        if name == "content":
            return partial(content_agrees, limit=self.max_content_change)
        return _CHECKS[name][0]

    def judge(self, similarity: float, query: Facts, cached: Facts) -> str | None:
        """None to serve ``cached``'s answer to ``query``; else the name of what refused."""
        if similarity < self.threshold:
            return "similarity"
        for name, agrees in self._tests:
            if not agrees(query, cached):
                return name
        return None

    def __repr__(self) -> str:
        return (
            f"Guard(threshold={self.threshold}, checks={self.checks}, "
            f"max_content_change={self.max_content_change})"
        )
