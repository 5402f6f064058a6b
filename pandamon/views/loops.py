"""`/loops/`: every loop's last run, lag, work done and error, stalled ones first in the summary;
an htmx request gets the strip alone, which every page's header loads."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from pandamon.queries.loops import loop_strip
from pandamon.views._common import monitor_view, respond


@monitor_view
def loop_list(request: HttpRequest) -> HttpResponse:
    loops = loop_strip()
    return respond(request, "pandamon/loops.html", {"loops": loops}, lambda: loops, partial="loop-strip")
