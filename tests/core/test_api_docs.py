"""The API reference at /api/docs/ works without network and under the CSP: Swagger UI comes from
the vendored sidecar package, its initialiser from a script file, and every operation of the schema
is listed."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from tests.browser import chromium

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_the_docs_page_loads_nothing_from_another_host(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower()
    assert "<script>" not in html.replace(" ", "")  # no inline script: the CSP would block it
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html


@pytest.mark.interop
@pytest.mark.django_db(transaction=True)
def test_swagger_ui_lists_the_operations_in_chromium(live_server: Any) -> None:
    hosts: set[str] = set()
    problems: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_selector(".opblock", timeout=15_000)
        operations = page.locator(".opblock").count()
        title = page.locator(".info .title").inner_text()
    assert "ailuro API" in title
    assert operations >= 30, operations
    assert hosts == {urlsplit(live_server.url).netloc}, hosts
    assert problems == []
