"""Cost of bearer authentication: local RS256 validation of an OIDC access token (the per-request
path of every API call with a JWT) and the rejection of a forged one. Starts its own test provider.

    python bench/auth.py [N]      # prints one JSON object
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from core import oidc  # noqa: E402
from tests.interop.oidc_provider import OidcProvider, b64, provider_install, unverified_parts  # noqa: E402


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    provider_install()
    with tempfile.TemporaryDirectory() as tmp:
        provider = OidcProvider(Path(tmp) / "jwks.json", [])
        provider.start()
        try:
            settings.OIDC_ISSUER, settings.OIDC_ENABLED = provider.issuer, True
            settings.OIDC_AUDIENCE = ["urn:wms:api"]
            token = provider.robot_token()
            start = time.perf_counter()
            oidc.jwt_claims(token, audience=settings.OIDC_AUDIENCE)  # discovery + JWKS fetch
            cold_ms = (time.perf_counter() - start) * 1e3
            warm = per_call_us(lambda: oidc.jwt_claims(token, audience=settings.OIDC_AUDIENCE), n)
            h, p, s = token.split(".")
            forged = h + "." + b64({**unverified_parts(token)[1], "sub": "admin"}) + "." + s

            def reject() -> None:
                try:
                    oidc.jwt_claims(forged, audience=settings.OIDC_AUDIENCE)
                except oidc.InvalidToken:
                    return
                raise AssertionError("forged token accepted")

            rejected = per_call_us(reject, n)
        finally:
            provider.stop()
    print(
        json.dumps(
            {
                "benchmark": "bearer JWT validation (RS256, local JWKS)",
                "calls": n,
                "first_token_ms_with_discovery_and_jwks": round(cold_ms, 2),
                "valid_token_us_per_call": round(warm, 1),
                "forged_token_us_per_call": round(rejected, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
