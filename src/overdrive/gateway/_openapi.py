"""The gateway's API, described by hand as an OpenAPI 3.1 document."""

from __future__ import annotations

from typing import Any

from .._units import DURATION_PATTERN

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_ANTHROPIC_ERROR = {"$ref": "#/components/schemas/AnthropicError"}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool", "developer"]},
        "content": {"type": ["string", "array", "null"]},
        "name": {"type": "string"},
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number"},
        "n": {"type": "integer", "minimum": 1},
        "stop": {"type": ["string", "array", "null"]},
        "stream": {"type": "boolean", "default": False},
        "stream_options": {
            "type": "object",
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "tools": {"type": "array", "items": {"type": "object"}},
        "response_format": {"type": "object"},
        "seed": {"type": "integer"},
        "user": {"type": "string"},
    },
}
_EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            ]
        },
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
}
_RESPONSES_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {"type": ["string", "array"]},
        "instructions": {"type": ["string", "null"]},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "previous_response_id": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean", "default": False},
    },
}
_ANTHROPIC_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["user", "assistant"]},
        "content": {"type": ["string", "array"]},
    },
}
_MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "messages": {"type": "array", "minItems": 1, "items": _ANTHROPIC_MESSAGE},
        "system": {"type": ["string", "array"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "tools": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean", "default": False},
    },
}
_COUNT_TOKENS_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _ANTHROPIC_MESSAGE},
        "system": {"type": ["string", "array"]},
        "tools": {"type": "array", "items": {"type": "object"}},
    },
}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    # Anthropic's error shape, which the Messages routes answer in.
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "ChatCompletionRequest": _CHAT_REQUEST,
    "EmbeddingsRequest": _EMBEDDINGS_REQUEST,
    "ResponsesRequest": _RESPONSES_REQUEST,
    "MessagesRequest": _MESSAGES_REQUEST,
    "CountTokensRequest": _COUNT_TOKENS_REQUEST,
    "ModelList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"const": "model"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
}
_OVERDRIVE_HEADERS = {
    "x-overdrive-cache": {
        "description": (
            "HIT when the answer came from the cache, STALE when it was served past its TTL "
            "while it is refreshed, SEMANTIC when it was cached for a question that means "
            "the same (see x-overdrive-similarity), MISS otherwise."
        ),
        "schema": {"type": "string", "enum": ["HIT", "STALE", "SEMANTIC", "MISS"]},
    },
    "x-overdrive-similarity": {
        "description": "On a SEMANTIC hit: the cosine similarity of the two questions.",
        "schema": {"type": "string"},
    },
    "x-overdrive-upstream": {
        "description": "The upstream that produced the answer.",
        "schema": {"type": "string"},
    },
    "x-overdrive-model": {
        "description": "The model that served the call (an alias's target, or a fallback).",
        "schema": {"type": "string"},
    },
}
_ADMISSION_PARAMETERS = [
    {
        "name": "x-overdrive-priority",
        "in": "header",
        "description": "Queue priority while waiting for an upstream; higher goes first.",
        "schema": {"type": "integer"},
    },
    {
        "name": "x-overdrive-queue-timeout",
        "in": "header",
        "description": (
            "How long the call may wait in the queue before a 504: seconds, "
            'or a duration such as "2s" or "500ms"; more than zero.'
        ),
        "schema": {"type": "string", "pattern": DURATION_PATTERN},
    },
]


def _errors(*statuses: int, error: dict[str, Any] = _ERROR) -> dict[str, Any]:
    reasons = {
        400: "Malformed JSON or a wrong field.",
        404: "Unknown model or URL.",
        405: "Method not allowed.",
        413: "Request body over the gateway's limit.",
        429: "The queue for the upstream is full.",
        500: "A bug in the gateway.",
        502: "The upstream failed.",
        503: "The engine is not started.",
        504: "The call waited in the queue past its deadline.",
    }
    content = {"application/json": {"schema": error}}
    return {str(s): {"description": reasons[s], "content": content} for s in statuses}


# One server-sent event, as OpenAPI 3.2 describes an event stream: each `data`
# is a chunk object as JSON text, then the literal `[DONE]`.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _call(
    summary: str,
    schema: str,
    answer: dict[str, Any],
    streams: bool,
    error: dict[str, Any] = _ERROR,
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": answer}}
    if streams:
        content["text/event-stream"] = {"schema": _SSE_EVENT}
    return {
        "post": {
            "summary": summary,
            "parameters": _ADMISSION_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                },
            },
            "responses": {
                "200": {
                    "description": "The answer.",
                    "headers": _OVERDRIVE_HEADERS,
                    "content": content,
                },
                **_errors(400, 404, 413, 429, 500, 502, 503, 504, error=error),
            },
        }
    }


def _get(summary: str, content_type: str, schema: dict[str, Any], *errors: int) -> dict[str, Any]:
    ok = {"description": "OK", "content": {content_type: {"schema": schema}}}
    return {"get": {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every gateway route."""
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "overdrive gateway",
            "version": "1",
            "description": (
                "OpenAI- and Anthropic-compatible API; every call goes through the engine."
            ),
        },
        "paths": {
            "/v1/chat/completions": _call(
                "Create a chat completion (JSON, or SSE with stream=true).",
                "ChatCompletionRequest",
                {"type": "object"},
                streams=True,
            ),
            "/v1/embeddings": _call(
                "Create embeddings.", "EmbeddingsRequest", {"type": "object"}, streams=False
            ),
            "/v1/responses": _call(
                "Create a model response (Responses API; JSON, or SSE with stream=true).",
                "ResponsesRequest",
                {"type": "object"},
                streams=True,
            ),
            "/v1/messages": _call(
                "Create a message (Anthropic Messages API; JSON, or SSE with stream=true).",
                "MessagesRequest",
                {"type": "object"},
                streams=True,
                error=_ANTHROPIC_ERROR,
            ),
            "/v1/messages/count_tokens": _call(
                "Count a message's input tokens (Anthropic Messages API).",
                "CountTokensRequest",
                {"type": "object"},
                streams=False,
                error=_ANTHROPIC_ERROR,
            ),
            "/v1/models": _get(
                "List the models the upstreams serve.",
                "application/json",
                {"$ref": "#/components/schemas/ModelList"},
                503,
            ),
            "/health/live": _get("The process is up.", "application/json", status),
            "/health/ready": _get(
                "The engine is built, an upstream is not ejected, and no drain has begun.",
                "application/json",
                status,
                503,
            ),
            "/metrics": _get("Prometheus metrics.", "text/plain", {"type": "string"}, 503),
            "/v1/overdrive/report": _get(
                "Where the last five minutes' request time went: the analysis and its figures.",
                "application/json",
                {"type": "object"},
                503,
            ),
            "/openapi.json": _get("This document.", "application/json", {"type": "object"}),
        },
        "components": {"schemas": _SCHEMAS},
    }
