"""OpenID Connect: provider metadata, signing keys, access-token validation, users and robots, and
the browser login backend (a mozilla-django-oidc subclass).

Why not mozilla-django-oidc's stock DRF class: it sends every bearer token to userinfo, so robot
(client-credentials) JWTs cannot work, it verifies neither `aud` nor `iss` of ID tokens, fetches the JWKS on every login, and an unreachable provider becomes a 500.
Here JWTs are validated locally against a cached JWKS, opaque tokens go to userinfo with a short
cache keyed by a hash of the token, and every provider failure is `ProviderUnavailable` (→ 503).

Settings: OIDC_* in config/settings.py (the delimited identity block).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from core.models import OidcAccount, OidcRobot
from core.roles import ROLE_GROUP_PREFIX, Role
from core.shared_cache import cache_get, cache_set

MAX_TOKEN_LENGTH = 8192  # longer bearer values are refused before any parsing or provider call
METADATA_CACHE_SECONDS = 3600
# An unknown `kid` refetches the JWKS (key rotation), but at most this often, so a client sending
# made-up key ids cannot turn each request into a call to the provider.
JWKS_MIN_REFETCH_SECONDS = 10


class ProviderUnavailable(Exception):
    """The identity provider could not be reached or answered with an error: a 503, not the client's fault."""


class InvalidToken(Exception):
    """The bearer token is not acceptable: a 401 naming the reason (never the token)."""


@dataclass(frozen=True)
class OidcIdentity:
    """`request.auth` of an OIDC bearer request. `role` is set for robots only (`core.roles.user_roles`
    then grants exactly that role); for users the synced `ailuro-<role>` groups decide."""

    kind: str  # "user" or "robot"
    subject: str
    client_id: str
    role: str | None = None
    queues: tuple[str, ...] = ()
    scopes: frozenset[str] = field(default_factory=frozenset)


def oidc_enabled() -> bool:
    return bool(getattr(settings, "OIDC_ENABLED", False) and settings.OIDC_ISSUER)


def token_cache_key(prefix: str, raw: str) -> str:
    """Cache keys for token-derived data: a digest, so the cache never holds a usable credential."""
    return f"{prefix}:{hashlib.sha256(raw.encode()).hexdigest()}"


# ---------------------------------------------------------------------------------------------
# Pure helpers: claims → names and roles
# ---------------------------------------------------------------------------------------------

_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


def username_candidate(claims: Mapping[str, Any]) -> str:
    """A readable Django username: preferred_username, else sub; only the characters Django allows."""
    raw = str(claims.get("preferred_username") or claims["sub"])
    return _USERNAME_UNSAFE.sub("_", raw)[:120] or "oidc-user"


def claim_groups(claims: Mapping[str, Any]) -> list[str] | None:
    """IdP groups from `groups` (and WLCG's `wlcg.groups`), surrounding '/' stripped; None when the
    claims carry no groups at all (then the user's roles are left as they are)."""
    found: list[str] | None = None
    for name in ("groups", "wlcg.groups"):
        value = claims.get(name)
        if isinstance(value, list):
            found = (found or []) + [g.strip("/") for g in value if isinstance(g, str) and g.strip("/")]
    return found


def roles_for_groups(groups: Iterable[str], mapping: Mapping[str, str], default: str) -> set[str]:
    """1. each IdP group mapped in OIDC_ROLE_GROUPS gives its role; 2. a group literally named
    `ailuro-<role>` gives that role; 3. nothing mapped → the default role."""
    roles: set[str] = set()
    for group in groups:
        mapped = mapping.get(group) or mapping.get(f"/{group}")
        if mapped in Role.values:
            roles.add(mapped)
        elif group.startswith(ROLE_GROUP_PREFIX) and group[len(ROLE_GROUP_PREFIX) :] in Role.values:
            roles.add(group[len(ROLE_GROUP_PREFIX) :])
    return roles or ({default} if default in Role.values else set())


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope") or claims.get("scp") or ""
    return frozenset(scope.split() if isinstance(scope, str) else [str(s) for s in scope])


# ---------------------------------------------------------------------------------------------
# Provider metadata and signing keys (in-process caches; `caches_clear` for tests and rotation)
# ---------------------------------------------------------------------------------------------

_lock = threading.Lock()
_metadata: dict[str, tuple[float, dict[str, Any]]] = {}
_keysets: dict[str, _KeySet] = {}


def caches_clear() -> None:
    with _lock:
        _metadata.clear()
        _keysets.clear()


def _get_json(url: str, **kwargs: Any) -> Any:
    """GET with the configured timeout; any network failure or non-2xx is ProviderUnavailable."""
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, **kwargs)
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"identity provider unavailable ({type(exc).__name__})") from None


def provider_metadata() -> dict[str, Any]:
    issuer = settings.OIDC_ISSUER
    now = time.monotonic()
    with _lock:
        cached = _metadata.get(issuer)
    if cached and now - cached[0] < METADATA_CACHE_SECONDS:
        return cached[1]
    document = _get_json(f"{issuer}/.well-known/openid-configuration")
    if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != issuer:
        raise ProviderUnavailable("identity provider's discovery document names another issuer")
    with _lock:
        _metadata[issuer] = (now, document)
    return document


_SETTING_FOR_ENDPOINT = {
    "authorization_endpoint": "OIDC_OP_AUTHORIZATION_ENDPOINT",
    "token_endpoint": "OIDC_OP_TOKEN_ENDPOINT",
    "userinfo_endpoint": "OIDC_OP_USER_ENDPOINT",
    "jwks_uri": "OIDC_OP_JWKS_ENDPOINT",
    "device_authorization_endpoint": "OIDC_OP_DEVICE_AUTHORIZATION_ENDPOINT",
}


def endpoint(name: str) -> str:
    """An endpoint URL: the explicit setting when given, else the discovery document's."""
    explicit = getattr(settings, _SETTING_FOR_ENDPOINT[name], "")
    if explicit:
        return str(explicit)
    value = provider_metadata().get(name)
    if not value:
        raise ProviderUnavailable(f"identity provider does not advertise {name}")
    return str(value)


class _KeySet:
    """The provider's signing keys by kid, refetched when stale or on an unknown kid (rate-limited)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = -1e9
        self.lock = threading.Lock()

    def _fetch(self) -> None:
        document = _get_json(self.uri)
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                continue
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue  # a key type this process cannot use (e.g. an encryption key)
        self.keys = keys
        self.fetched_at = time.monotonic()

    def get(self, kid: str) -> jwt.PyJWK:
        with self.lock:
            age = time.monotonic() - self.fetched_at
            stale = age > settings.OIDC_JWKS_CACHE_SECONDS
            if (kid not in self.keys or stale) and (stale or age > JWKS_MIN_REFETCH_SECONDS):
                try:
                    self._fetch()
                except ProviderUnavailable:
                    if kid not in self.keys:  # a known key keeps working through an outage
                        raise
            if kid not in self.keys:
                raise InvalidToken("token signed with an unknown key (kid)")
            return self.keys[kid]


def signing_key(kid: str) -> jwt.PyJWK:
    uri = endpoint("jwks_uri")
    with _lock:
        keyset = _keysets.setdefault(uri, _KeySet(uri))
    return keyset.get(kid)


def jwt_claims(raw: str, *, audience: list[str], nonce: str | None = None) -> dict[str, Any]:
    """Validate a JWT (access or ID token) locally.

    1. The header must name an allowed algorithm (RS256 by default: `none` and HS* never) and a kid.
    2. The key comes from the provider's JWKS (cached; unknown kid → one rate-limited refetch);
       a key that declares another algorithm is refused.
    3. Signature, `iss`, `aud`, `exp`, `iat`, `nbf` are checked with a small leeway; `exp iat iss
       aud sub` must be present.
    """
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        raise InvalidToken("malformed JWT") from None
    alg = header.get("alg")
    if alg not in settings.OIDC_ALGORITHMS:
        raise InvalidToken(f"JWT algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("JWT has no key id (kid)")
    key = signing_key(kid)
    if key.algorithm_name != alg:
        raise InvalidToken(f"JWT algorithm {alg!r} does not match its key")
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            key.key,
            algorithms=[alg],
            audience=audience,
            issuer=settings.OIDC_ISSUER,
            leeway=settings.OIDC_LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("token not yet valid") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("token audience is not this API") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("token issuer is not the configured identity provider") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("token signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid token ({type(exc).__name__})") from None
    if nonce is not None and claims.get("nonce") != nonce:
        raise InvalidToken("ID token nonce does not match the login")
    return claims


def userinfo_claims(raw: str) -> dict[str, Any]:
    """Claims of an opaque access token from userinfo, cached briefly under a digest of the token."""
    key = token_cache_key("oidc:userinfo", raw)
    cached = cache_get(key)
    if isinstance(cached, dict):
        return cached
    url = endpoint("userinfo_endpoint")
    try:
        response = requests.get(
            url, headers={"Authorization": f"Bearer {raw}"}, timeout=settings.OIDC_TIMEOUT
        )
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"identity provider unavailable ({type(exc).__name__})") from None
    if response.status_code in (400, 401, 403):
        raise InvalidToken("the identity provider does not accept this token")
    if response.status_code != 200:
        raise ProviderUnavailable(f"identity provider answered {response.status_code}")
    try:
        claims = response.json()
    except ValueError:
        raise ProviderUnavailable("identity provider sent an unreadable userinfo answer") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidToken("userinfo carries no subject")
    if settings.OIDC_USERINFO_CACHE_SECONDS:
        cache_set(key, claims, settings.OIDC_USERINFO_CACHE_SECONDS)
    return claims


# ---------------------------------------------------------------------------------------------
# Claims → Django users and robots
# ---------------------------------------------------------------------------------------------


def user_groups_sync(*, user: Any, roles: set[str]) -> None:
    """Make the user's `ailuro-<role>` groups exactly `roles`; other groups are the site's and stay."""
    wanted = {f"{ROLE_GROUP_PREFIX}{role}" for role in roles}
    current = set(user.groups.filter(name__startswith=ROLE_GROUP_PREFIX).values_list("name", flat=True))
    if current == wanted:
        return
    with transaction.atomic():
        keep = user.groups.exclude(name__startswith=ROLE_GROUP_PREFIX)
        groups = [Group.objects.get_or_create(name=name)[0] for name in sorted(wanted)]
        user.groups.set([*keep, *groups])


def user_for_claims(claims: Mapping[str, Any]) -> AbstractBaseUser:
    """The Django user of (issuer, sub), created on first sight; role groups synced when the claims
    carry groups. The username is preferred_username when free, else suffixed with a digest of the
    subject: an IdP user never takes over a local account by choosing its name."""
    subject = str(claims["sub"])
    issuer = settings.OIDC_ISSUER
    account = OidcAccount.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    if account is None:
        account = _account_create(issuer=issuer, subject=subject, claims=claims)
    user = account.user
    if not user.is_active:
        raise InvalidToken("this account is disabled")
    groups = claim_groups(claims)
    if groups is not None:
        roles = roles_for_groups(groups, settings.OIDC_ROLE_GROUPS, settings.OIDC_DEFAULT_ROLE)
        user_groups_sync(user=user, roles=roles)
        user_admin_flags_sync(user=user, admin=Role.ADMIN in roles)
    return user


def user_admin_flags_sync(*, user: Any, admin: bool) -> None:
    """The admin role opens Django's admin (staff + superuser); losing it at the IdP closes it again.
    Only users linked to the IdP get here, so a local bootstrap superuser is never demoted."""
    if user.is_staff != admin or user.is_superuser != admin:
        user.is_staff = user.is_superuser = admin
        user.save(update_fields=["is_staff", "is_superuser"])


def _account_create(*, issuer: str, subject: str, claims: Mapping[str, Any]) -> OidcAccount:
    user_model = get_user_model()
    base = username_candidate(claims)
    username = base
    if user_model.objects.filter(username=username).exists():
        username = f"{base}-{hashlib.sha256(f'{issuer}|{subject}'.encode()).hexdigest()[:8]}"
    try:
        with transaction.atomic():
            user = user_model.objects.create_user(username=username, email=str(claims.get("email") or ""))
            user.set_unusable_password()
            user.save(update_fields=["password"])
            return OidcAccount.objects.create(user=user, issuer=issuer, subject=subject)
    except IntegrityError:  # a concurrent first request created it
        return OidcAccount.objects.select_related("user").get(issuer=issuer, subject=subject)


def identity_from_access_token(raw: str) -> tuple[AbstractBaseUser, OidcIdentity]:
    """Authenticate an OIDC bearer token: JWT → local validation; opaque → userinfo (cached).

    A JWT whose client and subject match an active OidcRobot is that robot (role and queues from the
    registration). A client-credentials token (sub == client_id) of an unregistered client is refused.
    """
    if len(raw) > MAX_TOKEN_LENGTH:
        raise InvalidToken("bearer token too long")
    if raw.count(".") == 2:
        claims = jwt_claims(raw, audience=settings.OIDC_AUDIENCE)
    elif settings.OIDC_ACCEPT_OPAQUE_TOKENS:
        claims = userinfo_claims(raw)
    else:
        raise InvalidToken("only JWT access tokens are accepted")
    subject = str(claims["sub"])
    client_id = str(claims.get("client_id") or claims.get("azp") or "")
    robot = (
        OidcRobot.objects.select_related("user")
        .filter(subject=subject, client_id=client_id, active=True)
        .first()
        if client_id
        else None
    )
    if robot is not None:
        return robot.user, OidcIdentity(
            kind="robot",
            subject=subject,
            client_id=client_id,
            role=robot.role,
            queues=tuple(robot.queues),
            scopes=token_scopes(claims),
        )
    if client_id and subject == client_id:
        raise InvalidToken(f"client {client_id!r} is not registered as an ailuro robot")
    user = user_for_claims(claims)
    return user, OidcIdentity(kind="user", subject=subject, client_id=client_id, scopes=token_scopes(claims))


# ---------------------------------------------------------------------------------------------
# Browser login: mozilla-django-oidc backend
# ---------------------------------------------------------------------------------------------


def oidc_setting(attr: str, *args: Any) -> Any:
    """mozilla-django-oidc's settings lookup, with OIDC_OP_* endpoints resolved from discovery."""
    for name, setting in _SETTING_FOR_ENDPOINT.items():
        if attr == setting:
            return endpoint(name)
    return import_from_settings(attr, *args)


class AiluroOIDCBackend(OIDCAuthenticationBackend):
    """Code flow with PKCE; the ID token checked for signature, iss, aud, exp and nonce (upstream checks
    only the signature); users keyed by (iss, sub) and their groups mapped onto ailuro roles.

    Endpoints are resolved lazily: Django builds a backend for every session request (`get_user`),
    and a provider outage must not break pages of users who are already logged in."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:  # noqa: N802  (upstream's attribute name)
        return endpoint("token_endpoint")

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:  # noqa: N802
        return endpoint("userinfo_endpoint")

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:  # noqa: N802
        return endpoint("jwks_uri")

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return jwt_claims(token, audience=[settings.OIDC_RP_CLIENT_ID], nonce=kwargs.get("nonce"))
        except InvalidToken as exc:
            raise SuspiciousOperation(f"ID token rejected: {exc}") from None

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            info = userinfo_claims(access_token)
        except InvalidToken:
            return dict(payload)  # an AT meant for a resource server: the ID token's claims suffice
        if info.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("userinfo is about another subject than the ID token")
        return {**payload, **info}

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = self.get_userinfo(access_token, id_token, payload)
        if not claims.get("sub"):
            raise SuspiciousOperation("claims carry no subject")
        try:
            return user_for_claims(claims)
        except InvalidToken:
            return None

    def get_user(self, user_id: Any) -> AbstractBaseUser | AnonymousUser | None:
        """The session's user; a user disabled since the login is logged out on the next request."""
        user = self.UserModel._default_manager.filter(pk=user_id).first()
        return user if user is not None and user.is_active else None
