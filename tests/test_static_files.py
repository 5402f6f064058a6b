"""Static files: once collected, pages link content-hashed names that are served gzipped and cached
for a year; before collectstatic, the plain names work; and the vendored plotly.js bundle registers
every trace type the monitor's charts draw."""

from __future__ import annotations

import ast
import gzip
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.template import engines
from django.test import Client

from tests.browser import chromium

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "static" / "js" / "plotly-basic.min.js"
YEAR_S = 365 * 24 * 3600


def static_url(name: str) -> str:
    return engines["django"].from_string("{% load static %}{% static name %}").render({"name": name})


@pytest.fixture
def collected(settings: Any, tmp_path: Path) -> Path:
    """collectstatic into a scratch STATIC_ROOT, as `ailuro up` and a deployment run it."""
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)
    return Path(settings.STATIC_ROOT)


def test_collected_files_are_linked_by_content_hash_and_served_gzipped_for_a_year(
    collected: Path, client: Client
) -> None:
    url = static_url("js/plotly-basic.min.js")
    assert re.fullmatch(r"/static/js/plotly-basic\.min\.[0-9a-f]{12}\.js", url), url
    reply = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
    assert reply.status_code == 200
    assert reply["Content-Encoding"] == "gzip"
    cache = reply["Cache-Control"]
    assert "immutable" in cache
    max_age = re.search(r"max-age=(\d+)", cache)
    assert max_age and int(max_age.group(1)) >= YEAR_S
    assert gzip.decompress(b"".join(reply.streaming_content)) == BUNDLE.read_bytes()
    # A file newer than the manifest keeps its plain name instead of failing the page.
    assert static_url("js/not-collected.js") == "/static/js/not-collected.js"


@pytest.mark.django_db
def test_a_monitor_page_links_its_scripts_and_stylesheet_by_hash(collected: Path, client: Client) -> None:
    html = client.get("/jobs/").content.decode()
    for plain in ("css/ailuro.css", "js/htmx.min.js", "js/plotly-basic.min.js", "js/pandamon.js"):
        stem, ext = plain.rsplit(".", 1)
        assert re.search(rf'"/static/{re.escape(stem)}\.[0-9a-f]{{12}}\.{ext}"', html), plain


def test_before_collectstatic_the_plain_names_are_linked_and_served(
    settings: Any, tmp_path: Path, client: Client
) -> None:
    settings.STATIC_ROOT = tmp_path  # nothing collected: no manifest
    url = static_url("js/plotly-basic.min.js")
    assert url == "/static/js/plotly-basic.min.js"
    reply = client.get(url)
    assert reply.status_code == 200
    assert b"".join(reply.streaming_content) == BUNDLE.read_bytes()


# An axis's `type` ({"type": "date"} under `xaxis`) is not a trace type.
AXIS_TYPES = {"-", "linear", "log", "date", "category", "multicategory"}


def chart_trace_types() -> set[str]:
    """Every literal trace `"type"` in pandamon/charts.py, the one module that builds figures."""
    tree = ast.parse((ROOT / "pandamon" / "charts.py").read_text())
    return {
        value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant)
    } - AXIS_TYPES


@pytest.mark.interop
def test_the_vendored_plotly_bundle_registers_every_trace_type_the_charts_draw() -> None:
    drawn = chart_trace_types()
    assert "bar" in drawn  # the scan sees the charts
    with chromium() as browser:
        page = browser.new_page()
        page.set_content("<!doctype html><title>bundle</title>")
        page.add_script_tag(path=str(BUNDLE))
        registered = set(page.evaluate("Object.keys(Plotly.PlotSchema.get().traces)"))
    assert drawn <= registered, f"charts draw {sorted(drawn - registered)}, which {BUNDLE.name} lacks"
    assert "heatmap" not in registered  # the basic bundle is vendored, not the full one


def test_the_suite_does_not_read_the_static_files_the_embedded_run_collected(settings: Any) -> None:
    """`scripts/up.sh` collects into var/static; pages rendered from its manifest would link hashed
    names that the tests' servers do not serve."""
    root = Path(settings.STATIC_ROOT)
    assert root != (ROOT / "var" / "static").resolve()
    assert not (root / "staticfiles.json").exists()
