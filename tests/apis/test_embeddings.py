"""The embeddings adapter: checks naming the field, pricing by input, batchable calls, usage."""

from __future__ import annotations

from typing import Any

import pytest

from overdrive import RequestError
from overdrive._tokens import estimate_tokens
from overdrive.apis import EMBEDDINGS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "text"}, "model"),
        ({"model": 3, "input": "text"}, "model"),
        ({"model": "e"}, "input"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": 12}, "input"),
        ({"model": "e", "input": ["text", 12]}, "input"),
        ({"model": "e", "input": [True, False]}, "input"),  # not token ids
        ({"model": "e", "input": {"text": "x"}}, "input"),
    ],
)
def test_a_bad_body_is_refused_naming_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as refused:
        EMBEDDINGS.call(body)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("given", "tokens"),
    [
        ("a sentence to embed", estimate_tokens("a sentence to embed")),
        (["one", "two words"], estimate_tokens("one") + estimate_tokens("two words")),
        ([5, 6, 7, 8], 4),  # one input as token ids
        ([[5, 6], [7, 8, 9]], 5),
        (["", "x"], 1),
    ],
)
def test_a_call_is_priced_at_its_inputs_tokens(given: Any, tokens: int) -> None:
    call = EMBEDDINGS.call({"model": "e", "input": given, "dimensions": 64})
    assert call.tokens == tokens
    assert (call.op, call.path, call.api, call.stream) == (
        "embeddings",
        "/embeddings",
        EMBEDDINGS,
        False,
    )


def test_a_streamed_body_is_still_a_whole_answer() -> None:
    assert not EMBEDDINGS.call({"model": "e", "input": "x", "stream": True}).stream


@pytest.mark.parametrize(
    ("given", "batchable"),
    [("one text", True), (["one text"], False), (["a", "b"], False), ([1, 2], False)],
)
def test_only_a_one_string_call_is_batchable(given: Any, batchable: bool) -> None:
    assert EMBEDDINGS.batches
    assert EMBEDDINGS.batchable(EMBEDDINGS.call({"model": "e", "input": given})) is batchable


def test_embeddings_never_sample_nor_stream() -> None:
    call = EMBEDDINGS.call({"model": "e", "input": "x", "temperature": 1})
    assert not EMBEDDINGS.sampled(call)
    assert not EMBEDDINGS.stream_complete([b"data: [DONE]\n\n"])


@pytest.mark.parametrize(
    ("payload", "usage"),
    [
        ({"usage": {"prompt_tokens": 8, "total_tokens": 8}}, (8, 0)),
        ({"usage": {"prompt_tokens": "8"}}, (0, 0)),
        ({"data": []}, None),
    ],
)
def test_usage_counts_the_prompt_only(
    payload: dict[str, Any], usage: tuple[int, int] | None
) -> None:
    assert EMBEDDINGS.usage(payload) == usage
