"""The user file cache: sandboxes that prun and `bps submitcmd` upload and jobs download.

Files live flat in AILURO_PANDACOMPAT["CACHE_DIR"] under a safe base name and are served at
`/cache/<name>` (beside, never over, the pilot's `/cache/schedconfig/…` and
`/cache/ddmendpoints.json`). A `CacheFile` row says whose each file is: uploads count against a
per-user quota, and a name another user holds is not overwritten. Files expire
AILURO_PANDA_CACHE_KEEP_DAYS after their upload (`cache_files_expire`, the `cache_expiry` loop).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from pandacompat.models import CacheFile

log = logging.getLogger(__name__)

# A cache name: what `/cache/<name>` serves. No separators, no leading dot, no "..".
CACHE_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}"
_CACHE_NAME = re.compile(CACHE_NAME)
# Names the pilot protocol serves under /cache/ itself.
RESERVED_NAMES = frozenset({"schedconfig", "ddmendpoints.json"})


class CacheRefused(Exception):
    """An upload the cache refuses; `status` is the HTTP status (400, 409, 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def cache_dir() -> Path:
    return Path(settings.AILURO_PANDACOMPAT["CACHE_DIR"])


def cache_name_from_client(raw: str) -> str:
    """The base name of the client's path (panda-client sends its full local path), or
    CacheRefused when it is not a safe cache name."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    if not _CACHE_NAME.fullmatch(base) or ".." in base or base in RESERVED_NAMES:
        raise CacheRefused(
            f"file name {base[:80]!r} is not allowed: letters, digits and . _ + - only, "
            "at most 200 characters, not starting with a dot"
        )
    return base


def cache_path(name: str) -> Path | None:
    """The stored file of `name`, or None when there is none (or the name is not a cache name)."""
    if not _CACHE_NAME.fullmatch(name) or ".." in name:
        return None
    path = cache_dir() / name
    return path if path.is_file() else None


def footer_crc32(path: Path) -> int:
    """panda-client's `checksum` of a file: its last 8 bytes as (uint32, uint32), the first one."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 8))
        tail = handle.read(8)
    if len(tail) < 8:
        return 0
    return int(struct.unpack("<II", tail)[0])


def cache_file_find(*, owner: Any, size: int, checksum: int) -> str | None:
    """The name of a file of `owner` with this size and checksum (panda-client's sandbox reuse)."""
    return (
        CacheFile.objects.filter(owner=owner, size=size, footer_crc32=checksum)
        .order_by("-created")
        .values_list("name", flat=True)
        .first()
    )


def cache_file_store(*, owner: Any, name: str, chunks: Iterable[bytes]) -> CacheFile:
    """Write an upload under `name` for `owner`.

    1. Stream the chunks to a temporary file in the cache directory, refusing past the size limit.
    2. In one short transaction (the owner's user row locked, so one user's uploads queue): refuse
       a name another user holds, refuse past the owner's quota (a file replaced by the same name
       does not count twice), record the row.
    3. Move the file into place after the commit; a failed move takes the row back.
    """
    limit = int(settings.AILURO_PANDACOMPAT["CACHE_MAX_FILE_BYTES"])
    quota = int(settings.AILURO_PANDACOMPAT["CACHE_QUOTA_BYTES"])
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".upload-")
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise CacheRefused(f"file exceeds the cache's limit of {limit} bytes", 413)
                handle.write(chunk)
        checksum = footer_crc32(tmp)
        with transaction.atomic():
            get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
            existing = CacheFile.objects.filter(name=name).first()
            if existing is not None and existing.owner_id != owner.pk:
                raise CacheRefused(f"a file named {name!r} belongs to another user", 409)
            used = CacheFile.objects.filter(owner=owner).exclude(name=name).aggregate(n=Sum("size"))["n"] or 0
            if used + size > quota:
                raise CacheRefused(
                    f"your cache quota of {quota} bytes would be exceeded ({used} bytes in use); "
                    f"{_space_back(owner)}",
                    413,
                )
            row, _ = CacheFile.objects.update_or_create(
                name=name,
                # A replaced file's keep time starts again.
                defaults={"owner": owner, "size": size, "footer_crc32": checksum, "created": timezone.now()},
            )
        try:
            os.replace(tmp, directory / name)
        except OSError:
            CacheFile.objects.filter(pk=row.pk).delete()
            raise
        return row
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _space_back(owner: Any) -> str:
    """When the owner's oldest file expires, for the quota message."""
    oldest = (
        CacheFile.objects.filter(owner=owner).order_by("created").values_list("created", flat=True).first()
    )
    if oldest is None:
        return "the file alone is larger than the quota"
    expires = oldest + dt.timedelta(days=int(settings.AILURO_PANDACOMPAT["CACHE_KEEP_DAYS"]))
    return f"your oldest file expires at {expires:%Y-%m-%d %H:%M} UTC"


def cache_files_expire(*, limit: int = 1000, now: dt.datetime | None = None) -> int:
    """Delete up to `limit` cache files uploaded more than CACHE_KEEP_DAYS ago, oldest first: the
    file, then its row (a file already gone is fine). Returns how many went; the `cache_expiry`
    loop repeats while there are more."""
    before = (now or timezone.now()) - dt.timedelta(days=int(settings.AILURO_PANDACOMPAT["CACHE_KEEP_DAYS"]))
    expired = list(
        CacheFile.objects.filter(created__lt=before).order_by("created").values_list("pk", "name")[:limit]
    )
    directory = cache_dir()
    for _, name in expired:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    deleted, _ = CacheFile.objects.filter(pk__in=[pk for pk, _ in expired], created__lt=before).delete()
    if deleted:
        log.info(
            "%d cache file(s) older than %s deleted",
            deleted,
            before.isoformat(),
            extra={"event": "cache.expired", "deleted": deleted},
        )
    return deleted
