from __future__ import annotations

import contextlib
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive import CodecError
from overdrive.cache._codec import Codec

SECRET = b"test-secret"

# Flipped only if a pickle payload is ever loaded: the tamper tests assert it never is.
SIDE_EFFECTS: list[str] = []


def _trip(label: str) -> None:
    SIDE_EFFECTS.append(label)


class Bomb:
    """Unpickling this runs ``_trip``: proof of whether a payload was loaded."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_trip, (self.label,))


@pytest.fixture(autouse=True)
def _reset_side_effects() -> None:
    SIDE_EFFECTS.clear()


def _bomb_entry(key: bytes, label: str) -> bytes:
    return Codec(SECRET).encode(key, Bomb(label))


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner)
        | st.lists(inner).map(tuple)
        | st.dictionaries(st.text() | st.integers(0, 10) | st.binary(), inner)
    ),
    max_leaves=20,
)


@given(values)
def test_data_only_round_trip_keeps_types(value: object) -> None:
    codec = Codec()
    decoded = codec.decode(b"k", codec.encode(b"k", value))
    assert decoded == value
    assert repr(decoded) == repr(value)  # same types all the way down: tuples, bytes, ints


def test_openai_shaped_response_round_trips() -> None:
    response = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "tool_calls": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "embedding": [0.25, -1.5e-3],
    }
    codec = Codec()
    assert codec.decode(b"k", codec.encode(b"k", response)) == response


@pytest.mark.parametrize(
    ("value", "type_name"), [({1, 2}, "set"), ([1, {"a": object()}], "object")]
)
def test_data_only_refuses_other_types_naming_them(value: object, type_name: str) -> None:
    with pytest.raises(CodecError, match=f"cannot store {type_name} data-only"):
        Codec().encode(b"k", value)


def test_subclasses_are_refused_not_silently_downgraded() -> None:
    class Tagged(str):
        pass

    with pytest.raises(CodecError, match="Tagged"):
        Codec().encode(b"k", {"x": Tagged("y")})


def test_with_a_secret_other_types_use_signed_pickle() -> None:
    codec = Codec(SECRET)
    data = codec.encode(b"k", {1, 2})
    assert data[:1] == b"\x02"
    assert codec.decode(b"k", data) == {1, 2}
    assert codec.encode(b"k", {"plain": 1})[:1] == b"\x01"  # data stays data-only


def test_unpicklable_value_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot pickle"):
        Codec(SECRET).encode(b"k", lambda: None)


def test_the_bomb_does_go_off_when_signed_correctly() -> None:
    # Validates the probe used below: a genuine entry really is unpickled.
    Codec(SECRET).decode(b"k", _bomb_entry(b"k", "genuine"))
    assert SIDE_EFFECTS == ["genuine"]


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("altered signature", lambda entry: _flip(entry, 5)),
        ("altered payload", lambda entry: _flip(entry, len(entry) - 2)),
        ("truncated signature", lambda entry: entry[:10]),
        (
            "forged with another secret",
            lambda entry: Codec(b"attacker").encode(b"k", Bomb("forged")),
        ),
        (
            "attacker's own pickle, signature copied",
            lambda entry: entry[:33] + pickle.dumps(Bomb("swapped")),
        ),
    ],
)
def test_tampered_pickle_is_never_unpickled(name: str, tamper: Any) -> None:
    entry = tamper(_bomb_entry(b"k", "tampered"))
    with pytest.raises(CodecError, match="bad signature"):
        Codec(SECRET).decode(b"k", entry)
    assert SIDE_EFFECTS == [], name


def test_signed_entry_replayed_under_another_key_is_refused() -> None:
    with pytest.raises(CodecError, match="bad signature"):
        Codec(SECRET).decode(b"other", _bomb_entry(b"k", "replayed"))
    assert SIDE_EFFECTS == []


def test_pickle_entry_without_a_secret_is_refused_unread() -> None:
    with pytest.raises(CodecError, match="no secret configured"):
        Codec().decode(b"k", _bomb_entry(b"k", "no-secret"))
    assert SIDE_EFFECTS == []


@given(st.binary())
def test_garbage_only_ever_raises_codec_error(data: bytes) -> None:
    for codec in (Codec(), Codec(SECRET)):
        with contextlib.suppress(CodecError):
            codec.decode(b"k", data)


@pytest.mark.parametrize("data", [b"", b"\x09junk", b"\x01", b"\x01\xc1", b"\x01\xc7\x01\x05a"])
def test_known_garbage_raises_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        Codec().decode(b"k", data)


def test_empty_secret_is_rejected_and_repr_hides_it() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Codec(b"")
    assert repr(Codec(SECRET)) == "Codec(signed_pickle=True)"
