"""deploy/nginx/ailuro.conf: `nginx -t` (Debian's nginx, with a throwaway certificate), and its body
limits and proxy headers agree with the server's settings."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.deploy.conftest import DEPLOY, planted, run

CONF = DEPLOY / "nginx" / "ailuro.conf"


def nginx_test(tools: Path, conf: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of `conf` inside a minimal main file, with every path it writes under tmp_path."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ailuro.example.org",
             "-keyout", str(key), "-out", str(cert)],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
    site = tmp_path / "site.conf"
    site.write_text(
        conf.read_text()
        .replace("/etc/ssl/ailuro/fullchain.pem", str(cert))
        .replace("/etc/ssl/ailuro/privkey.pem", str(key))
    )
    main = tmp_path / "nginx.conf"
    temp_paths = "\n".join(
        f"  {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{\n  access_log {tmp_path / 'access.log'};\n{temp_paths}\n  include {site};\n}}\n"
    )
    return run([tools / "nginx", "-t", "-p", tmp_path, "-c", main])


def test_nginx_accepts_the_example(tools, tmp_path):
    result = nginx_test(tools, CONF, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    client_max_body_size 1m;", "    client_max_body_size 1m", "invalid number of arguments"),
        ("proxy_read_timeout 600s;", "proxy_read_timout 600s;", "unknown directive"),
        (
            "location = /readyz  { proxy_pass http://ailuro_web;",
            "location = /readyz  { proxy_pass http://nowhere_web;",
            "host not found",
        ),
    ],
    ids=["missing-semicolon", "typo-directive", "unknown-upstream"],
)
def test_nginx_refuses_a_planted_error(tools, tmp_path, old, new, message):
    result = nginx_test(tools, planted(tmp_path, CONF, old, new, "planted.conf"), tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


# --- agreement with config/settings.py -------------------------------------------------------------

_SIZE = {"k": 1024, "m": 1024**2, "g": 1024**3}


def _bytes(size: str) -> int:
    return int(size[:-1]) * _SIZE[size[-1].lower()] if size[-1].isalpha() else int(size)


def locations(text: str) -> tuple[int, list[tuple[str, str, str]]]:
    """(the HTTPS server's default body limit, [(modifier, pattern, block)]) — nginx's flat subset
    used in this file: no nested locations."""
    https = text[text.index("listen 443") :]
    default = _bytes(re.search(r"^    client_max_body_size (\S+);", https, re.M).group(1))
    found = re.findall(r"^    location (=|~|\^~)?\s*(\S+)\s*\{(.*?)\}", https, re.M | re.S)
    return default, found


def location_block(text: str, path: str) -> str | None:
    """The block of the location nginx picks for `path` (None: the server level): exact match,
    else the regexes in order (unless the longest prefix is ^~), else the longest prefix."""
    _, found = locations(text)
    for modifier, pattern, block in found:
        if modifier == "=" and pattern == path:
            return block
    prefixes = [
        (p, m, b) for m, p, b in found if m in ("", "^~") and path.startswith(p) and not p.startswith("@")
    ]
    longest = max(prefixes, key=lambda item: len(item[0]), default=None)
    if longest is None or longest[1] != "^~":
        for modifier, pattern, block in found:
            if modifier == "~" and re.search(pattern, path):
                return block
    return longest[2] if longest else None


def body_limit(text: str, path: str) -> int:
    """The client_max_body_size nginx applies to `path`."""
    default, _ = locations(text)
    block = location_block(text, path)
    match = re.search(r"client_max_body_size (\S+);", block or "")
    return _bytes(match.group(1)) if match else default


def upstream(text: str, path: str) -> str:
    block = location_block(text, path) or ""
    match = re.search(r"proxy_pass http://(\w+);", block)
    return match.group(1) if match else ""


def test_body_limits_equal_the_server_caps():
    text = CONF.read_text()
    for prefix, cap in settings.AILURO_BODY_CAPS.items():
        probe = prefix if prefix.endswith("/") else prefix + "/"
        assert body_limit(text, probe + "x") == cap, prefix
    assert body_limit(text, "/api/v1/workflows/") == settings.AILURO["MAX_SPEC_BYTES"]


def test_body_limit_reader_sees_a_planted_mismatch(tmp_path):
    text = planted(
        tmp_path, CONF, "        client_max_body_size 16m;", "        client_max_body_size 8m;"
    ).read_text()
    assert body_limit(text, "/server/panda/updateJob") == 8 * 1024**2
    assert body_limit(text, "/login/x") == 16 * 1024  # the regex location
    assert body_limit(text, "/jobs/") == 1024**2  # the server default


def test_proxy_headers_match_the_proxy_settings():
    """AILURO_BEHIND_PROXY makes Django trust X-Forwarded-Proto == "https" (SECURE_PROXY_SSL_HEADER)."""
    text = CONF.read_text()
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert "proxy_set_header Host $host;" in text
    https = text[text.index("listen 443") :]
    assert "ssl_certificate " in https
    long_timeouts = re.findall(r"location (\S+) \{[^}]*proxy_read_timeout (\d+)s", https)
    assert {path for path, seconds in long_timeouts if int(seconds) > 60} == {
        "/api/v1/workflows",
        "/api/v1/campaigns",
        "/api/v1/file_server/upload_cache_file",  # sandboxes up to 768 MiB
    }


def test_exactly_the_pilot_lane_goes_to_the_pilot_upstream():
    text = CONF.read_text()
    for path in settings.AILURO_PILOT_LANE:
        assert upstream(text, path) == "ailuro_pilot", path
        assert body_limit(text, path) == settings.AILURO_BODY_CAPS["/server/panda/"], path
    for path in (
        "/server/panda/updateJobX",
        "/server/panda/getJobStatisticsPerSite",
        "/server/panda/relay_idds_command",
        "/server/panda/putFile",
        "/api/v1/pilot/append_log",
        "/api/v1/pilot/update_job/",
        "/xapi/v1/pilot/update_job",
        "/api/v1/file_server/upload_cache_file",
        "/api/v1/job/submit",
        "/jobs/",
    ):
        assert upstream(text, path) == "ailuro_web", path
    pilot = re.search(r"upstream ailuro_pilot \{(.*?)\}", text, re.S).group(1)
    assert "server 127.0.0.1:8001;" in pilot and "server 127.0.0.1:8000 backup;" in pilot


def test_routing_reader_sees_a_planted_lane_path_missing(tmp_path):
    text = planted(tmp_path, CONF, "|updateWorkerPilotStatus)", ")").read_text()
    assert upstream(text, "/server/panda/updateWorkerPilotStatus") == "ailuro_web"
