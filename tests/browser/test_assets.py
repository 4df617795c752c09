"""How the dashboard is served: same origin only, strict headers, the pinned chart library."""

from __future__ import annotations

import hashlib
import re

import pytest

from app.dashboard import STATIC


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/"])
def test_the_page_is_served_with_a_strict_policy(anonymous, path):
    answer = anonymous.get(path)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert '<script type="module" src="/dashboard/static/js/main.js">' in answer.text


def test_every_asset_the_page_names_is_served_from_this_origin(anonymous):
    page = anonymous.get("/dashboard").text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert not [a for a in assets if "//" in a], "the page must load nothing from another host"
    for asset in assets:
        if asset.startswith("data:"):
            continue
        answer = anonymous.get(asset)
        assert answer.status_code == 200, asset
    modules = sorted(p.name for p in (STATIC / "js").glob("*.js"))
    for module in modules:
        answer = anonymous.get(f"/dashboard/static/js/{module}")
        assert answer.headers["Content-Type"].startswith("text/javascript"), module
        imported = re.findall(r'from "\./([a-z]+\.js)"', answer.text)
        assert set(imported) <= set(modules), module


def test_a_missing_asset_is_a_404_in_the_envelope(anonymous):
    answer = anonymous.get("/dashboard/static/js/nothing.js")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_the_vendored_chart_library_is_the_pinned_one():
    readme = (STATIC / "README.md").read_text()
    pinned = re.search(r"file sha256 \| `([0-9a-f]{64})`", readme).group(1)
    library = (STATIC / "vendor" / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(library).hexdigest() == pinned
    version = re.search(r"Chart\.js (\d+\.\d+\.\d+)", readme).group(1)
    assert library.startswith(f"/*!\n * Chart.js v{version}\n".encode())
    assert (STATIC / "vendor" / "chart.js-LICENSE.md").read_text().startswith("The MIT License")
