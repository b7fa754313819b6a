"""Prefix affinity: send a call where the longest prefix of its prompt was served.

Each model's pool keeps a :class:`PrefixIndex`: for every link of the prompt
prefixes it routed (see ``apis/_prefix.py``), the few deployments that served
it most recently. A call's deepest link found names the deployments likely to
hold its prefix in their prompt cache; a link every deployment holds (a system
prompt all conversations share) tells nothing, and the balancer decides.

The index is bounded (least recently used links forgotten first) and may be
wrong: a provider evicts on its own schedule. Being wrong costs one call at
the uncached price, never a wrong answer.

>>> index = PrefixIndex(max_links=8)
>>> index.record((1, 2, 3), "a")
>>> index.record((1, 5), "b")
>>> index.holders((1, 2, 3, 4)), index.holders((1, 5, 6)), index.holders((1, 9))
(('a',), ('b',), ('a', 'b'))
>>> index.holders((7,))
()
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["MAX_HOLDERS", "PrefixIndex"]

# The deployments remembered per link: enough for a prefix that every
# deployment of a large pool serves to read as "everyone" and tell nothing.
MAX_HOLDERS = 8


class PrefixIndex:
    """Link → the deployments that served a prompt through it, most recent last."""

    __slots__ = ("_links", "max_links")

    def __init__(self, max_links: int = 65_536) -> None:
        self.max_links = max_links
        self._links: OrderedDict[int, list[str]] = OrderedDict()

    def holders(self, chain: Sequence[int]) -> tuple[str, ...]:
        """The deployments that served the deepest link of ``chain`` seen; () if none."""
        links = self._links
        for link in reversed(chain):
            found = links.get(link)
            if found is not None:
                return tuple(found)
        return ()

    def record(self, chain: Sequence[int], name: str) -> None:
        """``name`` served a prompt with ``chain``: each link is now (also) held there."""
        links = self._links
        for link in chain:
            held = links.get(link)
            if held is None:
                links[link] = [name]
            else:
                links.move_to_end(link)
                if not held or held[-1] != name:
                    _promote(held, name)
        while len(links) > self.max_links:
            links.popitem(last=False)

    def __len__(self) -> int:
        return len(self._links)

    def __repr__(self) -> str:
        return f"PrefixIndex(links={len(self._links)}/{self.max_links})"


def _promote(held: list[str], name: str) -> None:
    """Move ``name`` to the end (most recent) of ``held``, dropping the oldest past the cap."""
    if name in held:
        held.remove(name)
    held.append(name)
    if len(held) > MAX_HOLDERS:
        del held[0]
