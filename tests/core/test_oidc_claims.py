from __future__ import annotations

from core.oidc import claim_groups, roles_for_groups, token_cache_key, token_scopes, username_candidate

MAPPING = {"atlas": "user", "atlas/production": "operator", "bad": "superhero"}


def test_usernames_come_from_preferred_username_or_sub_never_email() -> None:
    assert username_candidate({"sub": "u-1", "preferred_username": "alice", "email": "a@x"}) == "alice"
    assert username_candidate({"sub": "8f1c/9a b", "email": "a@x"}) == "8f1c_9a_b"


def test_groups_come_from_groups_and_wlcg_groups_with_slashes_stripped() -> None:
    assert claim_groups({"groups": ["/atlas/", "atlas/production"], "wlcg.groups": ["/cms"]}) == [
        "atlas",
        "atlas/production",
        "cms",
    ]
    assert claim_groups({"sub": "x"}) is None
    assert claim_groups({"groups": "atlas"}) is None  # not a list: ignored, roles left alone


def test_groups_map_to_roles_with_a_default_and_literal_role_groups() -> None:
    assert roles_for_groups(["atlas", "atlas/production"], MAPPING, "user") == {"user", "operator"}
    assert roles_for_groups(["ailuro-admin"], MAPPING, "user") == {"admin"}
    assert roles_for_groups(["bad", "other"], MAPPING, "reader") == {"reader"}
    assert roles_for_groups([], MAPPING, "nobody") == set()


def test_token_derived_cache_keys_hold_a_digest_not_the_token() -> None:
    key = token_cache_key("oidc:userinfo", "secret-token")
    assert "secret-token" not in key
    assert len(key.split(":")[-1]) == 64
    assert token_scopes({"scope": "wms:read wms:pilot"}) == {"wms:read", "wms:pilot"}
    assert token_scopes({"scp": ["a", "b"]}) == {"a", "b"}
