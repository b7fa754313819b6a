"""The content-word prefilter never hides an entry the guard's content gate would pass."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from overdrive.cache.semantic import Facts, facts_of
from overdrive.cache.semantic._guard import content_agrees
from overdrive.cache.semantic._words import ContentWords

WORDS = st.frozensets(st.sampled_from("abcdefghij"), max_size=7)
BLANK = facts_of("")


def facts(words: frozenset[str]) -> Facts:
    return dataclasses.replace(BLANK, content=words)


@given(query=WORDS, entries=st.lists(WORDS, max_size=6), limit=st.sampled_from([0.0, 0.25, 0.5]))
def test_whenever_an_entry_passes_the_gate_the_prefilter_says_it_could(
    query: frozenset[str], entries: list[frozenset[str]], limit: float
) -> None:
    index = ContentWords()
    for ident, words in enumerate(entries):
        index.add(b"s", ident, words)
    passes = any(content_agrees(facts(query), facts(words), limit) for words in entries)
    if passes:
        assert index.could_pass(b"s", query, limit)


def test_removing_every_entry_leaves_nothing_behind() -> None:
    index = ContentWords()
    index.add(b"s", 1, frozenset({"reset", "password"}))
    index.add(b"s", 2, frozenset())
    index.add(b"t", 3, frozenset({"reset"}))
    for ident in (1, 2, 3):
        index.remove(ident)
    assert len(index) == 0
    assert repr(index) == "ContentWords(entries=0, scopes=0)"


def test_scopes_are_kept_apart_and_a_wordless_query_needs_a_wordless_entry() -> None:
    index = ContentWords()
    index.add(b"s", 1, frozenset({"reset", "password"}))
    assert not index.could_pass(b"t", frozenset({"reset", "password"}), 0.25)
    assert not index.could_pass(b"s", frozenset(), 0.25)
    index.add(b"s", 2, frozenset())
    assert index.could_pass(b"s", frozenset(), 0.25)
