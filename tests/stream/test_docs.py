from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from overdrive import stream
from overdrive.stream import _chunks, _map


@pytest.mark.parametrize("module", [stream, _chunks, _map], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
