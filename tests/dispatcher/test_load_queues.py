from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from dispatcher.models import Queue, ResourceType, Site

pytestmark = pytest.mark.django_db
DEMO = Path(settings.BASE_DIR) / "embedded" / "demo" / "queues.yaml"


def test_loading_the_demo_twice_is_idempotent() -> None:
    call_command("load_queues", str(DEMO))
    call_command("load_queues", str(DEMO))

    assert Site.objects.count() == 3
    assert Queue.objects.count() == 5
    himem = Queue.objects.get(name="SLAC_Rubin_Himem")
    assert himem.max_rss_mb == 16000
    assert set(himem.resource_types.values_list("name", flat=True)) == {"SCORE", "SCORE_HIMEM"}
    assert ResourceType.objects.get(name="MCORE").max_cores is None


def test_a_second_load_updates_in_place(tmp_path: Path) -> None:
    call_command("load_queues", str(DEMO))
    patch = tmp_path / "q.yaml"
    patch.write_text(
        "queues:\n  - {name: SLAC_Rubin_Himem, site: SLAC, max_rss_mb: 32000, status: brokeroff}\n"
    )

    call_command("load_queues", str(patch))

    q = Queue.objects.get(name="SLAC_Rubin_Himem")
    assert (q.max_rss_mb, q.status) == (32000, "brokeroff")
    assert Queue.objects.count() == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queues:\n  - {name: Q, site: SLAC, max_ram: 4}\n", "unknown key(s) max_ram"),
        ("queues:\n  - {name: Q, site: NOWHERE}\n", "site 'NOWHERE' is not defined"),
        ("sites:\n  - {region: US}\n", "'name' is required"),
        ("queues:\n  - {name: Q, site: SLAC, status: sometimes}\n", "status"),
        (
            "queues:\n  - {name: Q, site: SLAC, resource_types: [GPU]}\n",
            "resource type(s) GPU are not defined",
        ),
        ("colours: []\n", "unknown top-level key(s) colours"),
        ("queues: [\n", "not valid YAML"),
    ],
)
def test_bad_files_are_refused_with_the_reason_and_load_nothing(
    tmp_path: Path, text: str, message: str
) -> None:
    call_command("load_queues", str(DEMO))
    before = list(Queue.objects.order_by("name").values_list("name", "max_rss_mb"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites:\n  - {name: NEWSITE}\n" + text if text.startswith("queues") else text)

    with pytest.raises(CommandError) as err:
        call_command("load_queues", str(bad))

    assert message in str(err.value)
    assert list(Queue.objects.order_by("name").values_list("name", "max_rss_mb")) == before
    assert not Site.objects.filter(name="NEWSITE").exists()


def test_queues_require_the_lease_except_the_real_panda_pilots(tmp_path: Path) -> None:
    call_command("load_queues", str(DEMO))
    doc = tmp_path / "q.yaml"
    doc.write_text(
        "queues:\n"
        "  - {name: P3, site: SLAC, pilot_flavour: panda}\n"
        "  - {name: P3_STRICT, site: SLAC, pilot_flavour: panda, require_lease: true}\n"
        "  - {name: OURS, site: SLAC}\n"
    )

    call_command("load_queues", str(doc))

    required = dict(Queue.objects.values_list("name", "require_lease"))
    assert (required["P3"], required["P3_STRICT"], required["OURS"]) == (False, True, True)
    assert required["SLAC_Rubin_Medium"] is True
