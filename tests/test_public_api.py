from __future__ import annotations

import inspect

import overdrive


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(overdrive).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert overdrive.__all__ == sorted(overdrive.__all__)
    assert public | {"__version__"} == set(overdrive.__all__)


def test_errors_form_one_hierarchy() -> None:
    errors = [getattr(overdrive, n) for n in overdrive.__all__ if n.endswith("Error")]
    assert all(issubclass(e, overdrive.OverdriveError) for e in errors)
