"""Who a pilot is: the one authentication function of the pilot protocol.

Setting `AILURO_PILOT_AUTH` decides:

* `token` (the default, production and the embedded run alike): `Authorization: Bearer ail_…`
  with a token of role `pilot` (or `admin`) made by `manage.py create_token --role pilot --queue
  Q`. A token bound to queues may acquire and update only those queues' jobs (403 otherwise). The real PanDA pilot sends the token
  in its token mode (`PANDA_AUTH_TOKEN`, see docs/site-admin/pilots.md).
* `open`: no credential is checked and every queue is allowed. For a demo on a laptop and for
  pilots behind a site's own authenticating proxy, never for a server on a network.

Token lookups are cached in-process for `AILURO_PILOT_TOKEN_CACHE_S` seconds (default 10): every
heartbeat would otherwise pay a token query. A revoked token therefore keeps working for at most
that long. The identity issue adds OIDC robot tokens here, in `pilot_authenticate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from django.conf import settings
from django.http import HttpRequest

from core.auth import api_token_lookup, bearer_from_request
from core.models import token_hash
from core.roles import Role
from dispatcher.protocol.codec import ProtocolError

AUTH_TOKEN = "token"  # noqa: S105  (a setting value, not a secret)
AUTH_OPEN = "open"


@dataclass(frozen=True)
class PilotIdentity:
    name: str
    queues: frozenset[str] | None  # None: every queue

    def allows(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues


OPEN_IDENTITY = PilotIdentity(name="anonymous pilot", queues=None)

_cache: dict[str, tuple[float, PilotIdentity | None]] = {}
_CACHE_MAX = 10_000


def pilot_token_cache_clear() -> None:
    _cache.clear()


def pilot_authenticate(request: HttpRequest) -> PilotIdentity:
    """The pilot behind `request`, or ProtocolError 401/403."""
    pilot = settings.AILURO_PILOT
    if pilot["AUTH"] == AUTH_OPEN:
        return OPEN_IDENTITY
    raw = bearer_from_request(request)
    if raw is None:
        raise ProtocolError("pilot authentication required: send Authorization: Bearer <pilot token>", 401)
    key = token_hash(raw)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        identity = hit[1]
    else:
        identity = _identity_from_token(raw)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = (now + cast(int, pilot["TOKEN_CACHE_S"]), identity)
    if identity is None:
        raise ProtocolError("invalid, expired or revoked token, or not a pilot token", 401)
    return identity


def _identity_from_token(raw: str) -> PilotIdentity | None:
    token = api_token_lookup(raw)
    if token is None or token.role not in (Role.PILOT, Role.ADMIN):
        return None
    queues = frozenset(str(q) for q in token.queues) if token.queues else None
    return PilotIdentity(name=f"token {token.key_prefix} ({token.user.get_username()})", queues=queues)


def check_queue(identity: PilotIdentity, queue: str) -> None:
    if not identity.allows(queue):
        raise ProtocolError(f"this pilot token is not bound to queue {queue!r}", 403)
