"""The base of every config section: frozen, unknown keys refused, strings stripped.

It lives apart from ``config.py`` so a section defined beside the code it
configures (``monitor/_alert_config.py``) can subclass it while ``config.py``
imports that section back: neither import waits on the other.

>>> class Example(_Section):
...     name: str = "x"
>>> Example(name=" y ").name
'y'
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["_Section"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
