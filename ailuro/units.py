"""One rule for showing memory and disk figures, shared by the monitor, the API and the CLI.

Stored units: a job's measured peak memory (`max_rss_kb`, `max_pss_kb`) is in kB (KiB, as the
kernel and the pilot report it); requests and limits (`memory_mb`, `request_memory_mb`,
`disk_mb`, `max_rss_mb` of a queue) are in MB (MiB). Shown: MB with one decimal, rounded half up,
and GB (two decimals) from `GB_FROM_MB` up. 1 MB = 1024 kB, 1 GB = 1024 MB.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

KB_PER_MB = 1024
MB_PER_GB = 1024
GB_FROM_MB = 10 * MB_PER_GB


def mb_from_kb(kb: int | None) -> float | None:
    """A kB figure in MB, one decimal, rounded half up (None stays None)."""
    if kb is None:
        return None
    return float((Decimal(kb) / KB_PER_MB).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def memory_text(kb: int | None) -> str:
    """A kB figure as text: '2.0 MB', '1464.8 MB', '12.50 GB'; '–' for none."""
    if kb is None:
        return "–"
    mb = Decimal(kb) / KB_PER_MB
    if mb >= GB_FROM_MB:
        return f"{(mb / MB_PER_GB).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)} GB"
    return f"{mb.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)} MB"


def memory_text_mb(mb: int | None) -> str:
    """An MB figure (a request or limit) by the same rule."""
    return "–" if mb is None else memory_text(mb * KB_PER_MB)
