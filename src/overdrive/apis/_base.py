"""The base of every API family adapter: what the doors and the stages ask of an API.

An **API family** (chat completions, embeddings, ...) is one adapter: a
subclass of :class:`Api`, made once as a module-level singleton and put in the
registry (:mod:`overdrive.apis`). The pipeline never branches on an API's
name; it asks the call's adapter (``call.api``):

=======================  ===============================================================
``name``                 the op label of its metrics ("chat"); hedging is configured by it
``path``                 the upstream path, after the base URL ("/chat/completions")
``method``, ``suffix``   what it answers on the doors: ``POST …/chat/completions``
``upstream_api``         the API an upstream must speak to serve it ("openai", "anthropic")
``call(body)``           check a parsed body and price it in tokens: a :class:`Call`
``ignored_fields(...)``  the body fields left out of the cache key
``key_fields(body)``     the body fields that make the cache key
``semantic_split(...)``  its key fields with the last user text set apart, or None
``sampled(call)``        whether the call asks the model to sample (a fresh answer)
``shares(call)``         whether its answer may be shared at all (cached, coalesced)
``batches``              whether any of its calls may be batched
``batchable(call)``      whether calls like it may be sent together as one
``usage(payload)``       (prompt, completion) tokens an answer reports, or None
``error_payload(...)``   an error answer in the API's own shape
``stream_type``          the media type of its streamed answers
``stream_complete(...)`` whether a streamed body ended cleanly (fit to store)
``is_error_event(...)``  whether one parsed stream event reports an error
``with_stream_usage``    a streamed call that also asks for its usage, and what hides it
=======================  ===============================================================

Only :meth:`Api.call` must be written: the rest default to an OpenAI-style API
that neither samples, batches nor streams. Adding an API is one adapter:

>>> from overdrive._calls import Call
>>> class Moderations(Api):
...     __slots__ = ()
...     name = "moderations"
...     path = "/moderations"
...
...     def call(self, body):
...         text = body.get("input")
...         if not isinstance(text, str):
...             raise RequestError("input", f"expected a string, got {text!r}")
...         return Call(self.name, body, model_of(body), False, len(text) // 4, self)
>>> Moderations().call({"model": "omni", "input": "an honest question"}).tokens
4

To add an API family for good: write its adapter in ``apis/<family>.py`` (a
subclass like the one above, overriding only what differs from the defaults,
and a singleton of it), register the singleton in ``apis/__init__.py`` with
:func:`overdrive.apis.register`, and give the sim its endpoints to test it
against. The doors then route ``POST …/moderations`` to it (the gateway, at
``/v1/moderations``) and every stage treats its calls like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._calls import Call
from .._errors import RequestError
from ._prefix import PrefixChain, prefix_chain
from ._semantic import Split

__all__ = ["Api", "model_of"]


class Api:
    """One API family: how its calls are checked, priced, keyed, read and answered.

    >>> class Echo(Api):
    ...     name, path = "echo", "/echo"
    >>> Echo()
    Echo('echo': POST …/echo)
    >>> Echo().usage({"usage": {"prompt_tokens": 3}})
    (3, 0)
    """

    __slots__ = ()

    name: str
    path: str
    method: str = "POST"
    # What an upstream must speak (``[[upstreams]] api``): its calls route only there.
    upstream_api: str = "openai"
    # Whether any of its calls may be batched (see ``batchable``).
    batches: bool = False
    stream_type: str = "text/event-stream"
    # Fields that change how an answer is delivered, not what it says.
    delivery_fields: frozenset[str] = frozenset({"stream", "stream_options", "timeout", "user"})
    # A streamed answer's bytes do depend on ``stream_options`` (include_usage
    # adds a usage chunk), so the key of a stream keeps it.
    stream_delivery_fields: frozenset[str] = delivery_fields - {"stream_options"}

    # Where a prompt's prefix lies (see ``apis/_prefix.py``): the fields read
    # before its turns, the field of the turns (None: no prompt to cache), and
    # a field that names the prefix outright.
    # Where in ``usage`` an answer reports the prompt tokens read from the
    # provider's prompt cache (a part of its prompt tokens); () for nowhere.
    cached_path: tuple[str, ...] = ("prompt_tokens_details", "cached_tokens")
    prefix_head: tuple[str, ...] = ()
    prefix_turns: str | None = None
    prefix_key: str | None = None

    @property
    def suffix(self) -> str:
        """The end of the door paths it answers on: its upstream path unless overridden."""
        return self.path

    def call(self, body: Mapping[str, Any]) -> Call:
        """Check a parsed body and price it in tokens; a :class:`RequestError` names a bad field."""
        raise NotImplementedError  # pragma: no cover

    def ignored_fields(self, *, streamed: bool = False) -> frozenset[str]:
        """The body fields the cache key leaves out (a stream's key keeps fewer)."""
        return self.stream_delivery_fields if streamed else self.delivery_fields

    def key_fields(self, body: Mapping[str, Any], *, streamed: bool = False) -> dict[str, Any]:
        """The body fields that make the cache key: all but the ignored ones and nulls.

        >>> Api().key_fields({"model": "m", "user": "ann", "seed": None, "n": 2})
        {'model': 'm', 'n': 2}
        """
        ignored = self.ignored_fields(streamed=streamed)
        return {k: v for k, v in body.items() if k not in ignored and v is not None}

    def semantic_split(self, body: Mapping[str, Any], *, streamed: bool = False) -> Split | None:
        """The key fields with the last user turn's text taken out, and that text; or None.

        The semantic cache matches the text by meaning and the rest exactly.
        None (the default) means no call of this API is matched by meaning.
        """
        return None

    def prefix(self, body: Mapping[str, Any], min_tokens: int = 0) -> PrefixChain:
        """The chain of ``body``'s prompt prefix, to route it where it is cached; () if none.

        Only prefixes of at least ``min_tokens`` (estimated) are links.

        >>> Api().prefix({"model": "m"})
        ()
        """
        if self.prefix_turns is None:
            return ()
        return prefix_chain(body, self.prefix_head, self.prefix_turns, self.prefix_key, min_tokens)

    def sampled(self, call: Call) -> bool:
        """Whether ``call`` asks the model to sample, so a repeat may answer differently."""
        return False

    def shares(self, call: Call) -> bool:
        """Whether ``call``'s answer may be shared at all: cached, coalesced, stored.

        False for a call whose answer depends on upstream state that changes
        (a call that also changes it, or runs in the background), whatever the
        ``[cache] sampled`` policy says: each such call goes upstream alone.
        """
        return True

    def batchable(self, call: Call) -> bool:
        """Whether ``call`` may be sent together with others like it as one upstream call."""
        return False

    def usage(self, payload: Mapping[str, Any]) -> tuple[int, int] | None:
        """The (prompt, completion) tokens an answer reports; None when it reports none.

        A count that is missing, negative or not an integer reads as 0.
        """
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            return None
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))

    def cached_tokens(self, payload: Mapping[str, Any]) -> int:
        """The prompt tokens an answer says the provider read from its prompt cache; 0 if none.

        >>> Api().cached_tokens({"usage": {"prompt_tokens_details": {"cached_tokens": 1024}}})
        1024
        """
        found: Any = payload.get("usage")
        for name in self.cached_path:
            if not isinstance(found, dict):
                return 0
            found = found.get(name)
        return _count(found) if self.cached_path else 0

    def error_payload(self, message: str, kind: str, param: str | None = None) -> dict[str, Any]:
        """An error answer's body in this API's shape (OpenAI's unless overridden).

        >>> Api().error_payload("no such model", "model_not_found", "model")["error"]["param"]
        'model'
        """
        return {"error": {"message": message, "type": kind, "param": param, "code": kind}}

    def stream_complete(self, chunks: Iterable[bytes]) -> bool:
        """Whether a streamed answer ended with its terminal event and no error (fit to store)."""
        return False  # an API that does not stream has no complete stream

    def is_error_event(self, payload: Any) -> bool:
        """Whether one parsed event of a streamed answer reports an error."""
        return False

    def with_stream_usage(self, call: Call) -> Call | None:
        """``call`` asking the upstream to report its usage in the stream, if it does not.

        None when it already does, or when the API always reports it (the
        default): nothing to ask for, nothing to hide from the caller.
        """
        return None

    def is_usage_event(self, payload: Any) -> bool:
        """Whether a parsed event carries only the usage :meth:`with_stream_usage` asked for."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}: {self.method} …{self.suffix})"


def model_of(body: Mapping[str, Any]) -> str:
    """The body's ``model``: a non-empty string, else :class:`RequestError`.

    >>> model_of({"model": ""})
    Traceback (most recent call last):
    ...
    overdrive._errors.RequestError: request field `model`: expected a non-empty model name, got ''
    """
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model", f"expected a non-empty model name, got {model!r}")
    return model


def _count(value: Any) -> int:
    # ``type() is int``: a bool is an int to isinstance, never a token count.
    return value if type(value) is int and value >= 0 else 0
