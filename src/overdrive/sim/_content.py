"""Deterministic content: answers and vectors that depend only on the request.

Same request, same answer; a different prompt gives a different answer. Nothing
here reads a clock or a global random state, so tests can assert exact output.

>>> words, capped = completion_words(chat_digest("m", [{"role": "user"}], None), None)
>>> 16 <= len(words) <= 63 and not capped
True
>>> sentence(["hello", "world"]) == "".join(stream_pieces(["hello", "world"]))
True
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from typing import Any

from overdrive._json import dumps_canonical

__all__ = [
    "VOCABULARY",
    "chat_digest",
    "completion_words",
    "embedding",
    "embedding_base64",
    "input_key",
    "sentence",
    "stream_pieces",
]

# 256 words, so one digest byte picks one word with no modulo bias.
_WORDS = """
    able about above across action after again against agent album almost along already
    also always amber among anchor angle answer apple april area argue around arrive art
    aside autumn average avoid awake balance basket beach beacon become before begin
    behind bell below beside better beyond bird blanket bloom blue board boat border
    bottle branch brave bread breeze bridge bright bring broad brook brush build burst
    button cabin cable calm camera candle canvas carbon careful carpet carry castle
    cedar center chain chalk change chapter charge cherry circle civic clear clever
    cliff clock cloud coast coffee collect color comet common copper corner cotton
    course cover craft crane crisp crown cycle daily dance dawn debate decide deep delta
    desert design detail direct distant doctor double dragon drift during eager early
    earth echo eight either elbow ember empty energy engine enjoy enough entire equal
    escape evening event every exact expand fabric factor falcon family famous feather
    fence field figure final finger forest format fossil fresh friend frozen future
    galaxy garden gather gentle giant ginger glass global golden gravel green ground
    guide habit harbor harvest hazel health heavy hidden hollow honest horizon hover
    humble hunter idea island ivory jacket jigsaw journey jungle kettle kernel kindle
    ladder lantern laser later lemon letter level light linen liquid little lively
    lizard local lunar magnet maple marble margin meadow medium melody memory metal
    middle minute mirror modern moment motion mountain narrow native nature needle never
    noble normal north novel number ocean office olive orange orbit paddle palace parade
    pebble pencil pepper planet pocket prism quartz
"""
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())

_MIN_WORDS = 16
_WORD_SPAN = 48  # answers run 16..63 words
_BIG_ENDIAN = sys.byteorder == "big"


def chat_digest(model: str, messages: list[Any], max_tokens: int | None) -> bytes:
    """64 bytes of blake2b over the canonical request: byte 0 sets the length, 1..63 the words."""
    canonical = dumps_canonical([model, messages, max_tokens])
    return hashlib.blake2b(canonical, digest_size=64).digest()


def completion_words(digest: bytes, max_tokens: int | None) -> tuple[list[str], bool]:
    """The answer's words (one token each) and whether ``max_tokens`` cut it short."""
    count = _MIN_WORDS + digest[0] % _WORD_SPAN
    capped = max_tokens is not None and max_tokens < count
    if max_tokens is not None:
        count = min(count, max_tokens)
    return [VOCABULARY[b] for b in digest[1 : count + 1]], capped


def sentence(words: list[str]) -> str:
    """The message content: the words as one capitalised sentence."""
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def stream_pieces(words: list[str]) -> list[str]:
    """One piece per word, spaced so that joining the pieces gives :func:`sentence`."""
    pieces = [" " + word for word in words]
    pieces[0] = words[0].capitalize()
    pieces[-1] += "."
    return pieces


def input_key(item: str | list[int]) -> bytes:
    """Seed material for one embedding input (text, or one tokenized input)."""
    if isinstance(item, str):
        return b"t" + item.encode()
    return b"i" + dumps_canonical(item)


def embedding(key: bytes, dimensions: int) -> array[float]:
    """An L2-normalised float32 vector seeded from ``key``.

    Components come from a SHAKE-256 stream read as int16, which is fast in pure
    Python and makes vectors of different inputs nearly orthogonal.
    """
    raw = array("h", hashlib.shake_256(key).digest(2 * dimensions))
    if _BIG_ENDIAN:
        raw.byteswap()  # the stream is read little-endian everywhere
    norm = math.hypot(*raw) or 1.0
    scale = 1.0 / norm
    return array("f", [x * scale for x in raw])


def embedding_base64(vector: array[float]) -> str:
    """The OpenAI ``encoding_format="base64"`` form: little-endian float32, base64."""
    if _BIG_ENDIAN:
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")
