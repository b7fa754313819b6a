"""Recording hooks for pool tests: every resource notices double use and double close."""

from __future__ import annotations

import asyncio


class Boom(Exception):
    """The factory (or a holder) failed on purpose."""


class Thing:
    __slots__ = ("closed", "healthy", "held", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.healthy = True
        self.held = False
        self.closed = False

    def enter(self) -> None:
        assert not self.held, f"{self!r} handed to two holders at once"
        assert not self.closed, f"{self!r} handed out after it was closed"
        self.held = True

    def leave(self) -> None:
        self.held = False

    def __repr__(self) -> str:
        return f"Thing({self.number})"


class Maker:
    """Factory, check and close hooks that record what they saw."""

    __slots__ = ("fail_next", "made")

    def __init__(self) -> None:
        self.made: list[Thing] = []
        self.fail_next = 0

    def make(self) -> Thing:
        if self.fail_next:
            self.fail_next -= 1
            raise Boom("factory failed")
        thing = Thing(len(self.made) + 1)
        self.made.append(thing)
        return thing

    async def amake(self) -> Thing:
        await asyncio.sleep(0)
        return self.make()

    def check(self, thing: Thing) -> bool:
        return thing.healthy

    def close(self, thing: Thing) -> None:
        assert not thing.closed, f"{thing!r} closed twice"
        thing.closed = True

    async def aclose(self, thing: Thing) -> None:
        await asyncio.sleep(0)
        self.close(thing)

    @property
    def open(self) -> list[Thing]:
        return [t for t in self.made if not t.closed]


async def settle(rounds: int = 30) -> None:
    """Let every ready task run until the loop is quiet (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
