from __future__ import annotations

import base64
import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from overdrive.sim._content import (
    VOCABULARY,
    chat_digest,
    completion_words,
    embedding,
    embedding_base64,
    input_key,
    sentence,
    stream_pieces,
)

MESSAGES = [{"role": "user", "content": "hello"}]


def test_vocabulary_has_one_word_per_byte() -> None:
    assert len(VOCABULARY) == 256
    assert len(set(VOCABULARY)) == 256
    assert all(word.isalpha() and word.islower() for word in VOCABULARY)


def test_same_request_same_words() -> None:
    first = completion_words(chat_digest("m", MESSAGES, None), None)
    second = completion_words(chat_digest("m", [{"content": "hello", "role": "user"}], None), None)
    assert first == second


def test_model_prompt_and_cap_change_the_answer() -> None:
    base = chat_digest("m", MESSAGES, None)
    assert chat_digest("other", MESSAGES, None) != base
    assert chat_digest("m", [{"role": "user", "content": "hello!"}], None) != base
    assert chat_digest("m", MESSAGES, 10) != base


@given(st.binary(min_size=64, max_size=64), st.none() | st.integers(1, 100))
def test_answer_length_and_cap(digest: bytes, cap: int | None) -> None:
    words, capped = completion_words(digest, cap)
    natural = 16 + digest[0] % 48
    assert 16 <= natural <= 63
    assert len(words) == (natural if cap is None else min(natural, cap))
    assert capped == (cap is not None and cap < natural)


@given(st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=63))
def test_stream_pieces_join_to_the_sentence(words: list[str]) -> None:
    pieces = stream_pieces(words)
    assert len(pieces) == len(words)
    assert "".join(pieces) == sentence(words)
    assert sentence(words).endswith(".")


@given(st.text(min_size=1), st.integers(1, 512))
def test_vectors_are_unit_length(text: str, dimensions: int) -> None:
    vector = embedding(input_key(text), dimensions)
    assert len(vector) == dimensions
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-5)


def test_vectors_are_deterministic_and_distinct() -> None:
    cat = embedding(input_key("cat"), 64)
    assert embedding(input_key("cat"), 64) == cat
    dog = embedding(input_key("dog"), 64)
    assert abs(sum(a * b for a, b in zip(cat, dog, strict=True))) < 0.9
    # A tokenized input is keyed apart from the text of its digits.
    assert input_key([1, 2]) != input_key("[1,2]")


def test_base64_is_little_endian_float32() -> None:
    vector = embedding(input_key("cat"), 8)
    raw = base64.b64decode(embedding_base64(vector))
    assert list(struct.unpack("<8f", raw)) == vector.tolist()
