"""The semantic tier's own logic, on a toy encoder: scopes, bounds, expiry, batching, failures.

The toy model maps a text to counts of a few topic words, so which texts are
"near" is plain to read; the real model and the guard on real paraphrases
are tested in test_adversarial.py and test_semantic_engine.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from overdrive import CacheError
from overdrive.cache.semantic import (
    BatchedEncoder,
    Guard,
    Probe,
    SemanticTier,
    Vectors,
    unit_rows,
)
from tests.cache.conftest import FakeWall

TOPICS = ("capital", "weather", "password", "invoice")


class ToyModel:
    """Counts topic words; records every batch it was asked to encode."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> Vectors:
        self.batches.append(list(texts))
        rows = [[text.lower().count(word) for word in TOPICS] + [0.05] for text in texts]
        return np.asarray(rows, dtype=np.float32)


def make_tier(model: ToyModel, wall: Callable[[], float], **options: Any) -> SemanticTier:
    encoder = BatchedEncoder(model, name="toy", max_pending=options.pop("max_pending", 1024))
    return SemanticTier(encoder, Guard(0.9), wall=wall, **options)


def probe(tier: SemanticTier, text: str, scope: bytes = b"scope") -> Probe:
    made = tier.probe(scope, text)
    assert made is not None
    return made


async def remember(tier: SemanticTier, text: str, key: bytes, scope: bytes = b"scope") -> None:
    tier.remember(probe(tier, text, scope), key, ttl=60)
    await tier.settle()


async def test_a_paraphrase_in_the_same_scope_finds_the_entry(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall)
    await remember(tier, "What is the capital of France?", b"k1")
    found = await tier.lookup(probe(tier, "Tell me the capital of France"))
    assert [c.key for c in found] == [b"k1"]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-3)
    await tier.aclose()


async def test_another_scope_never_sees_the_entry(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall)
    await remember(tier, "What is the capital of France?", b"k1", scope=b"one")
    assert await tier.lookup(probe(tier, "What is the capital of France?", b"two")) == []
    await tier.aclose()


async def test_a_lookup_in_an_empty_scope_embeds_nothing(wall: FakeWall) -> None:
    model = ToyModel()
    tier = make_tier(model, wall)
    assert await tier.lookup(probe(tier, "What is the capital of France?")) == []
    assert model.batches == []
    assert tier.outcomes.empty_scope == 1
    await tier.aclose()


async def test_the_vector_of_a_miss_is_reused_when_its_answer_is_remembered(
    wall: FakeWall,
) -> None:
    model = ToyModel()
    tier = make_tier(model, wall)
    await remember(tier, "capital of France", b"k1")
    asked = probe(tier, "weather in Paris")
    assert await tier.lookup(asked) == []
    tier.remember(asked, b"k2", ttl=60)
    await tier.settle()
    assert model.batches == [["capital of France"], ["weather in Paris"]]
    await tier.aclose()


async def test_far_questions_are_refused_by_similarity(wall: FakeWall) -> None:
    tier = SemanticTier(BatchedEncoder(ToyModel(), name="toy"), Guard(0.9, checks=()), wall=wall)
    await remember(tier, "capital of France", b"k1")
    assert await tier.lookup(probe(tier, "weather in France")) == []
    assert tier.outcomes.refused == {"similarity": 1}
    await tier.aclose()


async def test_a_question_sharing_too_few_content_words_is_not_even_embedded(
    wall: FakeWall,
) -> None:
    model = ToyModel()
    tier = make_tier(model, wall)
    await remember(tier, "capital of France", b"k1")
    model.batches.clear()
    assert await tier.lookup(probe(tier, "weather in France")) == []  # half its words are new
    assert model.batches == []
    assert tier.outcomes.refused == {"content": 1}
    assert [c.key for c in await tier.lookup(probe(tier, "the capital of France?"))] == [b"k1"]
    assert model.batches == [["the capital of France?"]]
    await tier.aclose()


async def test_without_the_content_gate_every_lookup_is_embedded(wall: FakeWall) -> None:
    model = ToyModel()
    tier = SemanticTier(
        BatchedEncoder(model, name="toy"), Guard(0.9, checks=("numbers",)), wall=wall
    )
    await remember(tier, "capital of France", b"k1")
    model.batches.clear()
    await tier.lookup(probe(tier, "weather in France"))
    assert model.batches == [["weather in France"]]
    await tier.aclose()


async def test_an_expired_entry_is_not_served_and_is_dropped(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall)
    await remember(tier, "capital of France", b"k1")
    wall.advance(61)
    assert await tier.lookup(probe(tier, "the capital of France")) == []
    assert len(tier) == 0
    await tier.aclose()


async def test_a_text_longer_than_max_chars_is_not_looked_up(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall, max_chars=20)
    assert tier.probe(b"scope", "x" * 21) is None
    assert tier.probe(b"scope", "x" * 20) is not None
    await tier.aclose()


async def test_max_entries_evicts_the_oldest(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall, max_entries=2)
    for index, text in enumerate(("capital", "weather", "password")):
        await remember(tier, text, f"k{index}".encode())
    assert len(tier) == 2
    assert await tier.lookup(probe(tier, "capital")) == []
    assert [c.key for c in await tier.lookup(probe(tier, "password"))] == [b"k2"]
    await tier.aclose()


async def test_the_memory_bound_holds_and_counts_every_entry(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall, memory=20_000)
    for index in range(200):
        await remember(tier, f"capital {index}", f"k{index}".encode(), scope=b"s%d" % index)
    assert 0 < tier.bytes_used <= 20_000
    assert 0 < len(tier) < 200
    per_entry = tier.bytes_used / len(tier)
    assert per_entry > 5 * 4  # at least its vector
    await tier.aclose()


async def test_forgetting_every_entry_frees_every_byte(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall)
    await remember(tier, "capital", b"k1")
    await remember(tier, "weather", b"k2")
    for candidate in await tier.lookup(probe(tier, "capital")):
        tier.forget(candidate.ident)
    for candidate in await tier.lookup(probe(tier, "weather")):
        tier.forget(candidate.ident)
    assert len(tier) == 0
    assert tier.bytes_used < 1024  # only the empty index's own maps are left
    await tier.aclose()


async def test_remembering_the_same_key_again_replaces_its_entry(wall: FakeWall) -> None:
    tier = make_tier(ToyModel(), wall)
    await remember(tier, "capital", b"k1")
    await remember(tier, "capital city", b"k1")
    assert len(tier) == 1
    await tier.aclose()


async def test_concurrent_lookups_share_one_encode(wall: FakeWall) -> None:
    model = ToyModel()
    tier = make_tier(model, wall)
    await remember(tier, "capital", b"k1")
    model.batches.clear()
    texts = ["capital?", "the capital", "the capital?", "weather"]
    found = await asyncio.gather(*(tier.lookup(probe(tier, text)) for text in texts))
    assert [len(f) for f in found] == [1, 1, 1, 0]
    assert model.batches == [texts[:3]]  # "weather" shares no word: refused unembedded
    await tier.aclose()


async def test_a_busy_embedder_makes_a_miss_not_an_error(wall: FakeWall) -> None:
    model = ToyModel()
    tier = make_tier(model, wall, max_pending=1)
    await remember(tier, "capital", b"k1")
    errors: list[CacheError] = []
    tier.on_error = errors.append
    found = await asyncio.gather(
        tier.lookup(probe(tier, "capital?")), tier.lookup(probe(tier, "capital!"))
    )
    assert sorted(len(f) for f in found) == [0, 1]
    assert tier.outcomes.skipped == 1
    assert "already wait" in str(errors[0])
    await tier.aclose()


async def test_a_failing_model_makes_every_waiting_lookup_miss(wall: FakeWall) -> None:
    calls: list[int] = []

    def encode(texts: list[str]) -> Vectors:
        calls.append(len(texts))
        if len(calls) > 1:
            raise RuntimeError("model crashed")
        return unit_rows(np.ones((len(texts), 3)))

    tier = SemanticTier(BatchedEncoder(encode, name="flaky"), Guard(0.9), wall=wall)
    await remember(tier, "capital", b"k1")
    assert await tier.lookup(probe(tier, "capital?")) == []
    assert tier.errors == 1
    assert tier.outcomes.skipped == 1
    await tier.aclose()


def test_unit_rows_refuses_what_is_not_one_vector_per_text() -> None:
    with pytest.raises(CacheError, match="one vector per text"):
        unit_rows(np.ones(3))


async def test_while_the_model_loads_a_lookup_misses_instead_of_waiting(wall: FakeWall) -> None:
    import threading

    loaded = threading.Event()
    model = ToyModel()

    def slow_to_load(texts: list[str]) -> Vectors:
        loaded.wait(30)  # the first (warming) encode holds the worker until the test lets it
        return model(texts)

    encoder = BatchedEncoder(slow_to_load, name="slow", warm=True)
    tier = SemanticTier(encoder, Guard(0.9), wall=wall)
    vector = unit_rows(np.array([[1.0, 0, 0, 0, 0.05]]))[0]
    tier.remember(Probe(b"scope", "capital", vector=vector), b"k1", ttl=60)
    await tier.settle()
    assert not encoder.ready
    assert await tier.lookup(probe(tier, "capital?")) == []
    assert tier.outcomes.skipped == 1
    assert model.batches == []
    loaded.set()
    await tier.warm()
    assert [c.key for c in await tier.lookup(probe(tier, "capital?"))] == [b"k1"]
    assert model.batches == [["warm up"], ["capital?"]]
    await tier.aclose()
