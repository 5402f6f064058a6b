"""Load sites, resource types and queues from a YAML document (`manage.py load_queues`).

The keys are the model field names, the same as in the admin, so a file can be written by
looking at the admin form. Loading is idempotent (update or create by name) and all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from dispatcher.models import PilotFlavour, Queue, ResourceType, Site


class ConfigInvalid(ValueError):
    pass


def _fields(
    model: type[Any], entry: Mapping[str, Any], where: str, *, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ConfigInvalid(f"{where}: expected a mapping, got {type(entry).__name__}")
    allowed = {f.name for f in model._meta.concrete_fields if not f.primary_key} | extra
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigInvalid(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    if not entry.get("name"):
        raise ConfigInvalid(f"{where}: 'name' is required")
    return dict(entry)


def _save(obj: Any, where: str) -> None:
    try:
        obj.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise ConfigInvalid(
            f"{where}: {'; '.join(f'{k}: {v[0]}' for k, v in exc.message_dict.items())}"
        ) from None
    obj.save()


@transaction.atomic
def queues_load(document: Mapping[str, Any]) -> dict[str, int]:
    """Create or update what the document describes; returns how many of each kind were loaded."""
    if not isinstance(document, Mapping):
        raise ConfigInvalid("the document must be a mapping with resource_types, sites and queues")
    unknown = sorted(set(document) - {"resource_types", "sites", "queues"})
    if unknown:
        raise ConfigInvalid(
            f"unknown top-level key(s) {', '.join(unknown)}; allowed: resource_types, sites, queues"
        )
    counts = {"resource_types": 0, "sites": 0, "queues": 0}
    for i, entry in enumerate(document.get("resource_types") or []):
        data = _fields(ResourceType, entry, f"resource_types[{i}]")
        rt = ResourceType.objects.filter(name=data["name"]).first() or ResourceType()
        for key, value in data.items():
            setattr(rt, key, value)
        _save(rt, f"resource_types[{i}] ({data['name']})")
        counts["resource_types"] += 1
    for i, entry in enumerate(document.get("sites") or []):
        data = _fields(Site, entry, f"sites[{i}]")
        site = Site.objects.filter(name=data["name"]).first() or Site()
        for key, value in data.items():
            setattr(site, key, value)
        _save(site, f"sites[{i}] ({data['name']})")
        counts["sites"] += 1
    for i, entry in enumerate(document.get("queues") or []):
        where = f"queues[{i}]"
        data = _fields(Queue, entry, where, extra=frozenset({"resource_types"}))
        where = f"{where} ({data['name']})"
        site_name = data.pop("site", None)
        queue_site = Site.objects.filter(name=site_name).first()
        if queue_site is None:
            raise ConfigInvalid(f"{where}: site {site_name!r} is not defined")
        rt_names = data.pop("resource_types", None)
        queue = Queue.objects.filter(name=data["name"]).first() or Queue()
        if data.get("pilot_flavour") == PilotFlavour.PANDA:
            # The real PanDA pilot does not echo the lease; a file may still say otherwise.
            data.setdefault("require_lease", False)
        queue.site = queue_site
        for key, value in data.items():
            setattr(queue, key, value)
        _save(queue, where)
        if rt_names is not None:
            rts = list(ResourceType.objects.filter(name__in=rt_names))
            missing = sorted(set(rt_names) - {rt.name for rt in rts})
            if missing:
                raise ConfigInvalid(f"{where}: resource type(s) {', '.join(missing)} are not defined")
            queue.resource_types.set(rts)
        counts["queues"] += 1
    return counts
