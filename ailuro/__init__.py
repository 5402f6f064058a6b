"""ailuro's Django-free side: the pilot and the command-line client (installable alone)."""

from __future__ import annotations

__version__ = "0.1.0"
