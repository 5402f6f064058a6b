from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dispatcher.config_load import ConfigInvalid, queues_load


class Command(BaseCommand):
    help = "Create or update sites, resource types and queues from a YAML file (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        try:
            document = yaml.safe_load(file.read_text())
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CommandError(f"{file} is not valid YAML: {exc}") from None
        try:
            counts = queues_load(document)
        except ConfigInvalid as exc:
            raise CommandError(f"{file}: {exc}") from None
        self.stdout.write(
            f"loaded {counts['resource_types']} resource types, {counts['sites']} sites, {counts['queues']} queues from {file}"
        )
