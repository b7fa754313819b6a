"""Values to bytes and back for the shared cache tiers.

Every encoded value starts with one format tag byte, so the format can evolve
without misreading old entries:

``0x01`` msgpack (data only)
    dict, list, tuple, str, bytes, int (64-bit), float, bool and None,
    nested freely. Types are kept exactly: bytes stay bytes and tuples come
    back as tuples (carried in a msgpack extension type), so a cached value is
    indistinguishable from a fresh one. So does the engine's
    :class:`~overdrive.cache.StoredAnswer` (its own extension type; entries
    older versions wrote as plain tuples still read back as tuples).
    Subclasses (``OrderedDict``, enums, ``defaultdict``) are refused rather
    than silently turned into their base.
``0x02`` signed pickle (only with a ``secret``)
    ``tag | HMAC-SHA256(secret, tag | len(key) | key | payload) | payload``.
    The signature binds the entry to its key, so one valid entry cannot be
    replayed under another key, and it is checked with
    :func:`hmac.compare_digest` before a single byte is unpickled.

Decoding never raises anything but :class:`~overdrive.CodecError`.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

import msgpack  # type: ignore[import-untyped]

from .._errors import CodecError
from ._stage import StoredAnswer

__all__ = ["Codec"]

_MSGPACK = b"\x01"
_PICKLE = b"\x02"
_TUPLE_EXT = 1
_ANSWER_EXT = 2
_SIG_LEN = hashlib.sha256().digest_size
_TIER = "codec"


class _Unencodable(TypeError):
    """Raised from msgpack's ``default`` hook with the offending type."""

    def __init__(self, value: object) -> None:
        self.type_name = type(value).__qualname__
        super().__init__(self.type_name)


def _default(value: object) -> object:
    # strict_types sends tuples (and every subclass of a supported type) here.
    if type(value) is tuple:
        return msgpack.ExtType(_TUPLE_EXT, _pack(list(value)))
    if type(value) is StoredAnswer:
        return msgpack.ExtType(_ANSWER_EXT, _pack(list(value)))
    raise _Unencodable(value)


def _ext_hook(code: int, data: bytes) -> object:
    if code == _TUPLE_EXT:
        return tuple(_unpack(data))
    if code == _ANSWER_EXT:
        return StoredAnswer(*_unpack(data))
    raise ValueError(f"unknown msgpack extension {code}")


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    # strict_map_key=False: int and tuple dict keys round-trip; the data is our own
    # (a party able to write the store can already serve any value it likes).
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


class Codec:
    """Encodes cache values data-only (msgpack); with a ``secret``, signed pickle for the rest.

    >>> codec = Codec()
    >>> data = codec.encode(b"key", {"id": "x", "raw": b"\\x00", "pair": (1, 2)})
    >>> codec.decode(b"key", data)
    {'id': 'x', 'raw': b'\\x00', 'pair': (1, 2)}
    >>> Codec(secret=b"s3cret").decode(b"key", Codec(secret=b"s3cret").encode(b"key", {1.5}))
    {1.5}
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is not None and not secret:
            raise ValueError("secret must be non-empty (or None for data-only)")
        self._secret = secret

    def encode(self, key: bytes, value: object) -> bytes:
        """Bytes for ``value``; ``CodecError`` naming the type if it cannot be stored."""
        try:
            return _MSGPACK + _pack(value)
        except _Unencodable as exc:
            return self._encode_pickle(key, value, exc.type_name)
        except (TypeError, ValueError, OverflowError) as exc:
            return self._encode_pickle(key, value, f"{type(value).__qualname__} ({exc})")

    def decode(self, key: bytes, data: bytes) -> object:
        """The value ``encode`` was given; ``CodecError`` for anything unreadable or unsigned."""
        tag, body = data[:1], data[1:]
        if tag == _MSGPACK:
            return self._decode_msgpack(body)
        if tag == _PICKLE:
            return self._decode_pickle(key, body)
        raise CodecError(_TIER, f"unknown format tag {tag!r}")

    def _encode_pickle(self, key: bytes, value: object, what: str) -> bytes:
        if self._secret is None:
            raise CodecError(_TIER, f"cannot store {what} data-only; configure a secret to pickle")
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickle raises many types for one meaning: not storable
            raise CodecError(_TIER, f"cannot pickle {type(value).__qualname__}: {exc}") from exc
        return _PICKLE + self._sign(self._secret, key, payload) + payload

    @staticmethod
    def _decode_msgpack(body: bytes) -> object:
        try:
            return _unpack(body)
        except Exception as exc:  # garbage can fail in many ways; callers need one
            raise CodecError(_TIER, f"corrupt msgpack entry: {type(exc).__name__}") from exc

    def _decode_pickle(self, key: bytes, body: bytes) -> object:
        if self._secret is None:
            raise CodecError(_TIER, "pickled entry refused: no secret configured")
        signature, payload = body[:_SIG_LEN], body[_SIG_LEN:]
        if not hmac.compare_digest(signature, self._sign(self._secret, key, payload)):
            raise CodecError(_TIER, "pickled entry refused: bad signature")
        try:
            return pickle.loads(payload)
        except Exception as exc:  # signed but unloadable (e.g. class since removed)
            raise CodecError(_TIER, f"signed entry failed to unpickle: {exc}") from exc

    @staticmethod
    def _sign(secret: bytes, key: bytes, payload: bytes) -> bytes:
        mac = hmac.new(secret, _PICKLE, hashlib.sha256)
        # The length prefix keeps key/payload boundaries unambiguous.
        mac.update(len(key).to_bytes(8, "big"))
        mac.update(key)
        mac.update(payload)
        return mac.digest()

    def __repr__(self) -> str:
        return f"Codec(signed_pickle={self._secret is not None})"
