"""The user file cache: upload_cache_file, validate_cache_file, GET /cache/<name>."""

from __future__ import annotations

import datetime as dt
import gzip
import struct
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from config.loops import loop_named
from core.services import token_create
from pandacompat.cache import cache_files_expire, cache_name_from_client
from pandacompat.models import CacheFile

pytestmark = pytest.mark.django_db

UPLOAD = "/api/v1/file_server/upload_cache_file"
VALIDATE = "/api/v1/file_server/validate_cache_file"


@pytest.fixture(autouse=True)
def cache_dir(settings: Any, tmp_path: Path) -> Path:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "CACHE_DIR": tmp_path / "panda-cache"}
    cache.clear()  # rate-limit windows
    yield tmp_path / "panda-cache"
    cache.clear()


@pytest.fixture
def alice() -> str:
    return token_create(username="alice")


def sandbox(text: str = "echo hello\n") -> bytes:
    return gzip.compress(text.encode())


def upload(client: Client, token: str | None, name: str, content: bytes) -> Any:
    """A multipart body as panda-client's httpx sends it: the filename is the client's path as
    given (Django's test client would reduce it to a base name itself)."""
    boundary = "855de01b9f2e2fed7ce381053fd01f94"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"HTTP_ORIGIN": "atlas"}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.post(UPLOAD, body, content_type=f"multipart/form-data; boundary={boundary}", **headers)


def test_an_upload_named_by_the_clients_full_path_is_stored_under_its_base_name(
    client: Client, alice: str, cache_dir: Path
) -> None:
    content = sandbox()
    response = upload(client, alice, "scratch/work/submit/u_alice_x/jobO.1234-abcd.tar.gz", content)
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "",
        "data": {"name": "jobO.1234-abcd.tar.gz", "size": len(content)},
    }
    assert (cache_dir / "jobO.1234-abcd.tar.gz").read_bytes() == content
    row = CacheFile.objects.get()
    assert (row.name, row.owner.username, row.size) == ("jobO.1234-abcd.tar.gz", "alice", len(content))
    assert row.footer_crc32 == struct.unpack("<II", content[-8:])[0]


def test_a_job_downloads_the_file_from_the_root_cache_path(client: Client, alice: str) -> None:
    content = sandbox("payload")
    upload(client, alice, "/home/alice/jobO.5678.tar.gz", content)
    response = client.get("/cache/jobO.5678.tar.gz")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content


@pytest.mark.parametrize("name", ["../../x", "..\\..\\x", "/etc/x"])
def test_a_path_climbing_out_is_reduced_to_its_base_name(
    client: Client, alice: str, cache_dir: Path, name: str
) -> None:
    response = upload(client, alice, name, b"data")
    assert response.status_code == 200
    assert (cache_dir / "x").read_bytes() == b"data"
    assert sorted(p.name for p in cache_dir.parent.iterdir()) == ["panda-cache"]


@pytest.mark.parametrize(
    "name", ["..", ".hidden", "dir/", "a b.tar", "x" * 201, "ddmendpoints.json", "schedconfig", "a..b"]
)
def test_names_that_are_not_safe_cache_names_are_refused(
    client: Client, alice: str, cache_dir: Path, name: str
) -> None:
    response = upload(client, alice, name, b"data")
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert not CacheFile.objects.exists()
    assert not any(p.name != ".upload" for p in cache_dir.glob("*")) if cache_dir.exists() else True


def test_cache_names_keep_what_panda_client_makes() -> None:
    assert cache_name_from_client("C:\\Users\\a\\sources.7e2f.tar.gz") == "sources.7e2f.tar.gz"
    assert cache_name_from_client("jobO.9fb78a27-902f-4b63-bc92-24ab17a5f423.tar.gz").startswith("jobO.")


def test_the_pilots_queue_descriptions_under_cache_are_not_shadowed(client: Client) -> None:
    from tests.factories import QueueFactory

    QueueFactory(name="SLAC_Rubin")
    queuedata = client.get("/cache/schedconfig/SLAC_Rubin.all.json")
    assert queuedata.status_code == 200
    assert "SLAC_Rubin" in queuedata.content.decode()
    assert client.get("/cache/ddmendpoints.json").status_code == 200


def test_an_unknown_or_unsafe_cache_name_is_404(client: Client) -> None:
    assert client.get("/cache/nothing.tar.gz").status_code == 404
    assert client.get("/cache/..%2F..%2Fsecret_key").status_code == 404
    assert client.get("/cache/.upload-x").status_code == 404


def test_uploading_needs_a_token_and_the_user_role(client: Client) -> None:
    assert upload(client, None, "a.tar.gz", b"x").status_code == 401
    reader = token_create(username="rita", role="reader")
    assert upload(client, reader, "a.tar.gz", b"x").status_code == 403
    assert not CacheFile.objects.exists()


def test_a_name_another_user_holds_is_not_overwritten(client: Client, alice: str, cache_dir: Path) -> None:
    upload(client, alice, "shared.tar.gz", b"alice's")
    bob = token_create(username="bob")
    response = upload(client, bob, "shared.tar.gz", b"bob's")
    assert response.status_code == 409
    assert (cache_dir / "shared.tar.gz").read_bytes() == b"alice's"


def test_the_same_user_may_replace_a_file(client: Client, alice: str, cache_dir: Path) -> None:
    upload(client, alice, "a.tar.gz", b"one")
    assert upload(client, alice, "a.tar.gz", b"two!").status_code == 200
    assert (cache_dir / "a.tar.gz").read_bytes() == b"two!"
    assert CacheFile.objects.get().size == 4


def test_files_over_the_size_limit_are_413_and_leave_nothing(
    client: Client, alice: str, settings: Any, cache_dir: Path
) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "CACHE_MAX_FILE_BYTES": 1024}
    response = upload(client, alice, "big.tar.gz", b"x" * 2048)
    assert response.status_code == 413
    assert not CacheFile.objects.exists()
    assert list(cache_dir.iterdir()) == []


def test_the_per_user_quota_is_413_past_it(
    client: Client, alice: str, settings: Any, cache_dir: Path
) -> None:
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "CACHE_QUOTA_BYTES": 3000}
    assert upload(client, alice, "a.tar.gz", b"x" * 2000).status_code == 200
    response = upload(client, alice, "b.tar.gz", b"x" * 2000)
    assert response.status_code == 413
    assert "quota" in response.json()["message"]
    assert upload(client, alice, "a.tar.gz", b"x" * 2500).status_code == 200  # a replacement counts once
    bob = token_create(username="bob")
    assert upload(client, bob, "c.tar.gz", b"x" * 2000).status_code == 200  # per user
    assert sorted(p.name for p in cache_dir.iterdir()) == ["a.tar.gz", "c.tar.gz"]


def test_a_client_that_loops_on_uploads_gets_429_with_retry_after(
    client: Client, alice: str, settings: Any
) -> None:
    """bps submitcmd retries a failed upload ~140 times a second and forever. (Hour-long windows:
    the 40 calls never straddle two.)"""
    settings.AILURO_RATE_LIMITS = {**settings.AILURO_RATE_LIMITS, "cache_upload": "5/hour"}
    statuses = [upload(client, alice, f"f{i}.tar.gz", b"x").status_code for i in range(40)]
    assert statuses[:5] == [200] * 5
    assert set(statuses[5:]) == {429}
    limited = upload(client, alice, "again.tar.gz", b"x")
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 3600
    assert limited.json()["success"] is False
    assert CacheFile.objects.count() == 5
    # Per identity: another user's token has a window of its own.
    bob = token_create(username="bob")
    assert upload(client, bob, "g.tar.gz", b"x").status_code == 200


def test_refused_uploads_count_against_the_rate_too(
    client: Client, alice: str, settings: Any, cache_dir: Path
) -> None:
    """The loop bps submitcmd enters: the upload is refused (here: over the quota), the client
    sends it again at once. The quota check runs `rate` times; every later call is answered 429
    before its multipart body is parsed, and nothing reaches the cache's rows or its folder."""
    settings.AILURO_RATE_LIMITS = {**settings.AILURO_RATE_LIMITS, "cache_upload": "5/hour"}
    settings.AILURO_PANDACOMPAT = {**settings.AILURO_PANDACOMPAT, "CACHE_QUOTA_BYTES": 1024}
    statuses = [upload(client, alice, "jobO.big.tar.gz", b"x" * 2048).status_code for _ in range(30)]
    assert statuses == [413] * 5 + [429] * 25
    assert not CacheFile.objects.exists()
    assert list(cache_dir.iterdir()) == []


def test_validate_finds_the_callers_own_file_by_size_and_checksum(client: Client, alice: str) -> None:
    content = sandbox("same sandbox")
    upload(client, alice, "jobO.1.tar.gz", content)
    checksum = struct.unpack("<II", content[-8:])[0]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {alice}"}
    found = client.post(
        VALIDATE, {"file_size": len(content), "checksum": checksum}, content_type="application/json", **auth
    )
    assert found.json() == {"success": True, "message": "FOUND:testserver:jobO.1.tar.gz", "data": None}
    missing = client.post(
        VALIDATE,
        {"file_size": len(content) + 1, "checksum": checksum},
        content_type="application/json",
        **auth,
    )
    assert missing.json()["message"] == "NOTFOUND"
    bob = token_create(username="bob")
    other = client.post(
        VALIDATE,
        {"file_size": len(content), "checksum": checksum},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {bob}",
    )
    assert other.json()["message"] == "NOTFOUND"


@pytest.mark.parametrize(
    "body", [b"[]", b'{"file_size": "1", "checksum": 2}', b'{"file_size": -1, "checksum": 2}', b"{"]
)
def test_validate_refuses_malformed_bodies(client: Client, alice: str, body: bytes) -> None:
    response = client.post(
        VALIDATE, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {alice}"
    )
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_files_expire_after_the_keep_time_and_give_their_quota_back(
    client: Client, alice: str, settings: Any, cache_dir: Path
) -> None:
    settings.AILURO_PANDACOMPAT = {
        **settings.AILURO_PANDACOMPAT,
        "CACHE_QUOTA_BYTES": 3000,
        "CACHE_KEEP_DAYS": 7,
    }
    assert upload(client, alice, "old.tar.gz", b"x" * 2000).status_code == 200
    assert upload(client, alice, "new.tar.gz", b"y" * 500).status_code == 200
    uploaded = CacheFile.objects.get(name="old.tar.gz").created
    CacheFile.objects.filter(name="old.tar.gz").update(created=uploaded - dt.timedelta(days=8))
    refused = upload(client, alice, "more.tar.gz", b"z" * 1000)
    assert refused.status_code == 413
    # The message says when space comes back: the oldest file's upload + 7 days.
    expires = (uploaded - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert f"your oldest file expires at {expires}" in refused.json()["message"]

    assert cache_files_expire() == 1
    assert sorted(p.name for p in cache_dir.iterdir()) == ["new.tar.gz"]
    assert list(CacheFile.objects.values_list("name", flat=True)) == ["new.tar.gz"]
    assert client.get("/cache/old.tar.gz").status_code == 404
    assert upload(client, alice, "more.tar.gz", b"z" * 1000).status_code == 200
    assert cache_files_expire() == 0  # nothing else is old enough


def test_expiry_is_bounded_per_call_and_a_missing_file_is_no_error(
    client: Client, alice: str, settings: Any, cache_dir: Path
) -> None:
    for n in range(3):
        assert upload(client, alice, f"f{n}.tar.gz", b"x" * 10).status_code == 200
    CacheFile.objects.update(created=timezone.now() - dt.timedelta(days=400))
    (cache_dir / "f0.tar.gz").unlink()
    assert cache_files_expire(limit=2) == 2
    assert cache_files_expire(limit=2) == 1
    assert not CacheFile.objects.exists()


def test_the_cache_expiry_loop_is_in_the_loop_table() -> None:
    loop = loop_named("cache_expiry")
    assert loop.step_function() is cache_files_expire
