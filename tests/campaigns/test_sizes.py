"""A campaign's data and groups are sized from the spec's numbers before any id or group is made:
over `CAMPAIGNS["MAX_DATA_IDS"]` or `["MAX_GROUPS"]` is 413 naming the field. The counts are checked
against the real split."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from campaigns.models import Campaign
from campaigns.queries import data_ids_load
from campaigns.spec import SpecInvalid, SpecTooLarge, spec_parse
from campaigns.splitting import SplitError, data_ids_from_ranges, ranges_size, split, split_size
from core.services import token_create
from tests.campaigns.conftest import spec_text


def _with_data(data: str, split_rule: str = "{rule: query, max_group_size: 3}") -> str:
    text = spec_text().replace("ranges: [[1, 6]]", data)
    return text.replace("{rule: query, max_group_size: 3}", split_rule, 1)


def test_data_ranges_of_10_to_the_12_ids_are_413_naming_the_field() -> None:
    started = time.perf_counter()
    with pytest.raises(SpecTooLarge) as info:
        spec_parse(_with_data("ranges: [[0, 999999999999]]"))
    assert time.perf_counter() - started < 0.05
    assert (info.value.status_code, info.value.field) == (413, "data.ranges")
    assert "1000000000000 data ids" in str(info.value) and "AILURO_CAMPAIGN_MAX_DATA_IDS" in str(info.value)


def test_a_split_into_too_many_groups_is_413_naming_the_rule_field() -> None:
    with pytest.raises(SpecTooLarge) as info:
        spec_parse(_with_data("ranges: [[1, 1000000]]", "{rule: query, max_group_size: 1}"))
    assert info.value.field == "steps[0].split.max_group_size"
    assert "1000000 groups" in str(info.value)
    # From a file the size is known only at launch: min_groups alone is enough to refuse.
    with pytest.raises(SpecTooLarge) as info:
        spec_parse(
            _with_data("file: {path: ids.csv}", "{rule: query, max_group_size: 3, min_groups: 1000000000000}")
        )
    assert info.value.field == "steps[0].split.min_groups"


def test_bad_ranges_and_rules_are_400() -> None:
    with pytest.raises(SpecInvalid) as info:
        spec_parse(_with_data("ranges: [[5, 1]]"))
    assert (info.value.status_code, info.value.field) == (400, "data.ranges")
    with pytest.raises(SpecInvalid) as info:
        spec_parse(_with_data("ranges: [[1, 6]]", "{rule: query, max_group_size: 0}"))
    assert (info.value.status_code, info.value.field) == (400, "steps[0].split.max_group_size")


def test_a_giant_pipeline_command_is_400_naming_it() -> None:
    text = spec_text().replace('"run isr {data_id}"', '"run isr {data_id} ' + "x" * 70_000 + '"')
    with pytest.raises(SpecInvalid) as info:
        spec_parse(text)
    assert (info.value.status_code, info.value.field) == (400, "pipeline.isr.command")


@pytest.mark.django_db
def test_loading_a_stored_spec_over_a_lowered_cap_counts_before_making_ids() -> None:
    with override_settings(CAMPAIGNS={**settings.CAMPAIGNS, "MAX_DATA_IDS": 1000}):
        started = time.perf_counter()
        with pytest.raises(SplitError, match="data.ranges holds 1000000000000 data ids; the limit is 1000 "):
            data_ids_load({"ranges": [[1, 10**12]]})
        assert time.perf_counter() - started < 0.05
        with pytest.raises(SplitError, match="limit is 1000"):
            data_ids_load({"ids": list(range(1001))})


@pytest.mark.django_db
def test_the_api_answers_413_with_the_field_in_milliseconds() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_create(username='alice', role='user')}")
    client.get("/api/v1/campaigns/")  # the first request of a process imports the URL conf: not timed
    started = time.perf_counter()
    response = client.post(
        "/api/v1/campaigns/", {"spec": _with_data("ranges: [[0, 999999999999]]")}, format="json"
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.content
    assert response.json()["field"] == "data.ranges"
    assert elapsed < 0.5
    assert not Campaign.objects.exists()


pairs = st.tuples(st.integers(-50, 50), st.integers(0, 20)).map(lambda p: [p[0], p[0] + p[1]])


@given(st.lists(pairs, max_size=5))
def test_ranges_size_is_the_number_of_ids_made(ranges: list[list[int]]) -> None:
    assert ranges_size(ranges) == len(data_ids_from_ranges(ranges))


@given(
    st.lists(st.integers(0, 200), min_size=1, max_size=60, unique=True).map(sorted),
    st.one_of(
        st.builds(
            lambda s, m: {"rule": "query", "max_group_size": s, "min_groups": m},
            st.integers(1, 30),
            st.integers(1, 5),
        ),
        st.just({"rule": "none"}),
    ),
)
def test_split_size_is_the_number_of_groups_made(ids: list[int], rule: dict[str, Any]) -> None:
    if rule.get("min_groups", 1) > len(ids):
        return  # refused by the split: more groups than ids
    assert split_size(rule, len(ids)) == len(split(ids, rule))
