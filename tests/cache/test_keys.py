from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive import RequestError
from overdrive._calls import chat_call
from overdrive.cache import call_key
from overdrive.cache._keys import request_key

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_key_ignores_dict_order(body: dict[str, Any]) -> None:
    reordered = dict(reversed(list(body.items())))
    assert request_key("chat", body) == request_key("chat", reordered)


def test_key_separates_op_namespace_and_params() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    key = request_key("chat", body)
    assert key != request_key("embeddings", body)
    assert key != request_key("chat", body, namespace="tenant-b")
    assert key != request_key("chat", {**body, "temperature": 0.5})
    assert len(key) == 16


def test_delivery_fields_do_not_change_a_calls_key() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    delivered = {**body, "stream_options": {"include_usage": True}, "user": "u1", "timeout": 3}
    assert call_key(chat_call(body)) == call_key(chat_call(delivered))
    assert call_key(chat_call(body)) == call_key(chat_call({**body, "seed": None}))
    assert call_key(chat_call(body)) != call_key(chat_call({**body, "stream": True}))


def test_a_callers_namespace_keeps_its_keys_apart() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    theirs = chat_call(body)
    mine = replace(theirs, namespace="tenant-a")
    assert call_key(mine, "app") != call_key(theirs, "app")
    assert call_key(mine, "app") == request_key("chat", mine.api.key_fields(body), "app/tenant-a")


@pytest.mark.parametrize("value", [2**70, object(), {1, 2}])
def test_unsendable_values_are_request_errors(value: object) -> None:
    with pytest.raises(RequestError, match="cannot be sent as JSON"):
        request_key("chat", {"model": "m", "extra": value})
