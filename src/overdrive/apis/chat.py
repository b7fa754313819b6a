"""The chat completions API (``POST …/chat/completions``): its adapter, :data:`CHAT`.

A body is checked for a model and a non-empty list of messages with roles,
and priced at its prompt's estimated tokens plus the answer's budget
(``max_completion_tokens`` or ``max_tokens``, else :data:`DEFAULT_OUTPUT_TOKENS`).

A streamed completion is server-sent events: ``data: {chunk}`` events, then
the terminal ``data: [DONE]``. It is complete and clean, fit to store and
replay as a cache hit, only when that terminal event arrived and no event
before it reported an error:

- a ``data:`` object with a non-null ``error`` member (OpenAI's mid-stream
  error) or ``"object": "error"`` (vLLM and others), or data that cannot be
  read as JSON yet mentions ``"error"``;
- an event of type ``error`` (``event: error``).

A body that stops before ``[DONE]`` was cut short (a truncated stream). An
event counts once a blank line ends it, as the SSE standard says, so a
``[DONE]`` whose line was cut off does not complete anything. The error
event itself still reaches the client: this only decides what is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from .._calls import Call
from .._errors import RequestError
from .._json import JSONDecodeError, loads
from .._tokens import estimate_messages_tokens
from ._base import Api, model_of
from ._semantic import Split, split_messages
from ._sse import sse_events

__all__ = ["CHAT", "DEFAULT_OUTPUT_TOKENS", "ChatApi", "chat_stream_complete", "is_error_event"]

# Reserved for the answer when a chat call sets no max_tokens; the real figure
# is settled from the reported usage once the answer arrives.
DEFAULT_OUTPUT_TOKENS = 256

_DONE = b"[DONE]"
_TEXT_PARTS = frozenset({"text"})
_NUMBER = (int, float)


class ChatApi(Api):
    """Chat completions: priced by prompt and answer budget; samples unless at temperature 0.

    >>> call = CHAT.call({"model": "m", "messages": [{"role": "user", "content": "hi"}],
    ...                   "max_tokens": 10})
    >>> call.op, call.path, call.tokens > 10
    ('chat', '/chat/completions', True)
    """

    __slots__ = ()

    name = "chat"
    path = "/chat/completions"
    # Tools, then the messages (system prompt first): the order OpenAI caches in.
    prefix_head = ("tools",)
    prefix_turns = "messages"
    prefix_key = "prompt_cache_key"

    def call(self, body: Mapping[str, Any]) -> Call:
        model = model_of(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages", "expected a non-empty list of message objects")
        for index, message in enumerate(messages):
            # ``type(...) is dict`` first: parsed JSON always is, and the ABC check costs more.
            if not (type(message) is dict or isinstance(message, Mapping)) or not isinstance(
                message.get("role"), str
            ):
                raise RequestError(f"messages[{index}]", "expected an object with a string `role`")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError("stream", f"expected true or false, got {stream!r}")
        tokens = estimate_messages_tokens(messages) + _output_budget(body)
        return Call(self.name, body, model, stream, tokens, self)

    def semantic_split(self, body: Mapping[str, Any], *, streamed: bool = False) -> Split | None:
        """The last message, when it is the user's text, set apart from the rest of the key."""
        return split_messages(self.key_fields(body, streamed=streamed), "messages", _TEXT_PARTS)

    def sampled(self, call: Call) -> bool:
        """True unless ``temperature`` is 0: OpenAI's default is 1, so a call without one samples.

        Only temperature decides: ``top_p`` narrows what is sampled from but at
        temperature 0 nothing is, and ``n`` asks for that many choices of
        whatever kind (both are part of the key, as every body field is, so an
        answer with one choice never serves a call that asked for ``n > 1``).
        """
        temperature = call.body.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, _NUMBER):
            return True  # unset (1), or a value the upstream will judge: not known to be greedy
        return temperature > 0

    def stream_complete(self, chunks: Iterable[bytes]) -> bool:
        return chat_stream_complete(chunks)

    def is_error_event(self, payload: Any) -> bool:
        return is_error_event(payload)

    def with_stream_usage(self, call: Call) -> Call | None:
        """A stream asked with ``stream_options.include_usage``, so its cost can be read.

        >>> asked = CHAT.with_stream_usage(CHAT.call({"model": "m", "stream": True,
        ...     "messages": [{"role": "user", "content": "hi"}]}))
        >>> asked.body["stream_options"]
        {'include_usage': True}
        """
        options = call.body.get("stream_options")
        if not call.stream or (isinstance(options, dict) and options.get("include_usage")):
            return None
        asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return replace(call, body={**call.body, "stream_options": asked})

    def is_usage_event(self, payload: Any) -> bool:
        """The last chunk ``include_usage`` adds: no choices, only the usage."""
        return (
            isinstance(payload, dict)
            and payload.get("choices") == []
            and isinstance(payload.get("usage"), dict)
        )


CHAT = ChatApi()


def _output_budget(body: Mapping[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(name, f"expected a positive integer, got {value!r}")
        return value
    return DEFAULT_OUTPUT_TOKENS


def chat_stream_complete(chunks: Iterable[bytes]) -> bool:
    """True if the streamed chat body ended with ``[DONE]`` and carried no error event.

    Chunk boundaries do not matter, even inside a line:

    >>> chat_stream_complete([b'data: {"choices": []}\\n\\nda', b'ta: [DONE]\\n\\n'])
    True
    >>> chat_stream_complete([b'data: {"error": {"message": "overloaded"}}\\n\\n',
    ...                       b'data: [DONE]\\n\\n'])
    False
    >>> chat_stream_complete([b'data: {"choices": []}\\n\\n'])  # truncated
    False
    """
    for kind, data in sse_events(b"".join(chunks)):
        if kind == b"error" or _reports_error(data):
            return False
        if data == _DONE:
            return True
    return False


def _reports_error(data: bytes) -> bool:
    if b'"error"' not in data:  # the common case, without parsing every chunk's JSON
        return False
    try:
        payload: Any = loads(data)
    except JSONDecodeError:
        return True  # unreadable, and about an error: not worth replaying
    return is_error_event(payload)


def is_error_event(payload: Any) -> bool:
    """Whether one parsed ``data:`` payload reports an error instead of a chunk.

    >>> is_error_event({"error": {"message": "overloaded"}}), is_error_event({"error": None})
    (True, False)
    """
    if not isinstance(payload, dict):
        return False
    return payload.get("error") is not None or payload.get("object") == "error"
