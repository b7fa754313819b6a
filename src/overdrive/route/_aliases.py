"""Model aliases (``[[models]]``): the name a call uses, the model it goes as, its fallbacks.

An alias is resolved once, where a call enters the engine, before its cache
key is made: the call becomes a call of the alias's first target (its body's
``model`` rewritten) carrying the rest of its chain as ``call.fallbacks``.
Every stage after that sees an ordinary call of a real model: it is keyed,
cached, coalesced, routed, paced and measured as that model, so ``fast`` and
``gpt-4o-mini`` share answers (upstream they are the same request). Only the
send reads ``fallbacks`` (``upstream/_send.py``).

>>> from overdrive.config import ModelAlias
>>> from overdrive._calls import chat_call
>>> aliases = aliases_of([ModelAlias(name="fast", targets=["mini"], fallbacks=["big"])])
>>> call = aliases["fast"].apply(chat_call({"model": "fast", "messages": [{"role": "user"}]}))
>>> call.model, call.body["model"], call.fallbacks
('mini', 'mini', ('big',))

Targets and fallbacks are tried as named, never resolved through another
alias (the config refuses cycles among alias names).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .._calls import Call
from ..config import ModelAlias

__all__ = ["Alias", "aliases_of", "retarget"]


@dataclass(slots=True, frozen=True)
class Alias:
    """What a call naming ``name`` becomes: a call of ``model``, then of each fallback in turn."""

    name: str
    model: str
    fallbacks: tuple[str, ...]

    def apply(self, call: Call) -> Call:
        """``call`` sent as this alias's model, with its fallbacks to try after it."""
        return retarget(call, self.model, self.fallbacks)


def aliases_of(entries: Iterable[ModelAlias]) -> dict[str, Alias]:
    """The alias table by name: a call's model is looked up in it once, as it enters.

    A plain dict so the engine's hot path asks ``call.model in table``, no call at all.
    """
    table = {}
    for entry in entries:
        first, *rest = entry.chain()
        table[entry.name] = Alias(entry.name, first, tuple(rest))
    return table


def retarget(call: Call, model: str, fallbacks: tuple[str, ...] = ()) -> Call:
    """``call`` for ``model`` (its body's ``model`` too), with ``fallbacks`` after it.

    The body is copied only when the model changes: the caller's own is never touched.
    """
    body = call.body if call.body.get("model") == model else {**call.body, "model": model}
    return replace(call, body=body, model=model, fallbacks=fallbacks)
