"""The page and its assets: shipped in the package, on the allow-list, nothing from elsewhere."""

from __future__ import annotations

import re

import pytest

from overdrive.dashboard._assets import ASSETS, asset, page


@pytest.mark.parametrize("name", ["index.html", "login.html"])
def test_a_page_loads_only_allowed_assets_of_its_own(name: str) -> None:
    html = page(name).decode()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert loaded  # the style at least
    for url in loaded:
        if url.startswith("data:"):
            continue  # the empty favicon: no request at all
        assert url.startswith("/dashboard/assets/"), url  # no CDN, no other host
        assert url.removeprefix("/dashboard/assets/") in ASSETS


@pytest.mark.parametrize("name", ["../_assets.py", "static/dashboard.js", "index.html", "", "."])
def test_anything_off_the_list_is_no_asset(name: str) -> None:
    assert asset(name) is None


def test_every_asset_ships_and_says_its_type() -> None:
    for name, media_type in ASSETS.items():
        found = asset(name)
        assert found is not None
        content, served_as = found
        assert content
        assert served_as == media_type


def test_the_script_writes_no_html_from_data() -> None:
    script = asset("dashboard.js")
    assert script is not None
    # Key names, models and alert labels come from callers' traffic: text only.
    assert b"innerHTML" not in script[0]
    assert b"eval(" not in script[0]


def test_an_unknown_page_is_an_error() -> None:
    with pytest.raises(ValueError, match="no page"):
        page("../config.py")
