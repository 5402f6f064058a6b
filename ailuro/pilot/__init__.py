"""The ailuro pilot: acquires jobs over the v1 protocol and runs their payloads (no Django)."""

from __future__ import annotations
