"""The embeddings API (``POST …/embeddings``): its adapter, :data:`EMBEDDINGS`.

A body is checked for a model and an ``input`` (a string, a list of strings,
or token id lists) and priced at the inputs' tokens; there is no answer budget.
Embeddings never sample and never stream. A call with one string input may be
micro-batched with others of the same model and options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._calls import Call
from .._errors import RequestError
from .._tokens import estimate_tokens
from ._base import Api, model_of

__all__ = ["EMBEDDINGS", "EmbeddingsApi"]


class EmbeddingsApi(Api):
    """Embeddings: priced by input tokens; one-string calls may be batched.

    >>> call = EMBEDDINGS.call({"model": "e", "input": [[1, 2, 3], "four"]})
    >>> call.op, call.tokens, EMBEDDINGS.batchable(call)
    ('embeddings', 4, False)
    >>> EMBEDDINGS.batchable(EMBEDDINGS.call({"model": "e", "input": "one text"}))
    True
    """

    __slots__ = ()

    name = "embeddings"
    path = "/embeddings"
    cached_path = ()
    batches = True

    def call(self, body: Mapping[str, Any]) -> Call:
        model = model_of(body)
        texts = _inputs(body.get("input"))
        tokens = sum(map(_input_tokens, texts))
        return Call(self.name, body, model, False, tokens, self)

    def batchable(self, call: Call) -> bool:
        """True for a call with one string input: a batch splits back into one-input answers."""
        return isinstance(call.body.get("input"), str)


EMBEDDINGS = EmbeddingsApi()


def _inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]  # one input given as token ids
        if all(isinstance(v, str | list) for v in value):
            return value
    raise RequestError("input", "expected a string, a non-empty list of strings, or token id lists")


def _input_tokens(item: str | list[int]) -> int:
    return estimate_tokens(item) if isinstance(item, str) else len(item)
