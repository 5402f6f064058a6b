"""Campaign → Step → Group (DESIGN §3); the models arrive with the campaign manager."""

from __future__ import annotations
