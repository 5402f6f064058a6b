"""`/job/<pandaid>/dag/`: the neighbourhood of a job across labels — its ancestors and descendants
up to `depth` edges away, at most `limit` jobs read, drawn one box per job up to `cap` and one box
per label above it. A final job's "after everything" edges are drawn dashed from the workflow's
sinks that the neighbourhood holds."""

from __future__ import annotations

from urllib.parse import quote

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse

from dispatcher.models import Job
from pandamon import dag_view
from pandamon.filters import int_param
from pandamon.queries import dag as reads
from pandamon.views._common import monitor_view, params_of, respond

MAX_DEPTH = 10
NEIGHBOURHOOD_LIMIT = 5000
JOB_NODE_CAP = 300


@monitor_view
def job_neighbourhood(request: HttpRequest, pandaid: int) -> HttpResponse:
    params = params_of(request)
    depth = int_param(params, "depth", default=2, maximum=MAX_DEPTH)
    cap = int_param(params, "cap", default=JOB_NODE_CAP, maximum=dag_view.MAX_JOB_BOXES)
    job = (
        Job.objects.filter(pk=pandaid)
        .values("pandaid", "name", "label", "workflow_id", "is_final", "data_id")
        .first()
    )
    if job is None:
        raise Http404(f"no job {pandaid}")
    jobs, edges, truncated = reads.job_neighbourhood(pandaid, depth=depth, limit=NEIGHBOURHOOD_LIMIT)
    ids = [j["pandaid"] for j in jobs]
    parents = sorted(a for a, b in edges if b == pandaid)
    children = sorted(b for a, b in edges if a == pandaid)
    # Final jobs run after every other job: dashed edges from the workflow's sinks drawn here.
    finals = reads.final_jobs_of(job["workflow_id"])
    dashed: list[tuple[int, int]] = []
    if finals and not job["is_final"]:
        known = {j["pandaid"] for j in jobs}
        jobs += [f for f in finals if f["pandaid"] not in known]
        sinks = set(ids) - reads.jobs_with_children(ids)
        dashed = dag_view.final_edges(ids, edges, {f["pandaid"] for f in finals}, sinks=sinks)
        if not dashed:
            jobs = [j for j in jobs if j["pandaid"] in known]
    graph = dag_view.job_graph(
        jobs,
        edges,
        dashed,
        url=lambda pk: reverse("pandamon:job", args=[pk]),
        cap=cap,
        focus=pandaid,
        label_url=lambda name: f"/workflow/{job['workflow_id']}/?label={quote(name)}",
    )
    context = {
        "job": job,
        "graph": graph,
        "depth": depth,
        "cap": cap,
        "truncated": truncated,
        "limit": NEIGHBOURHOOD_LIMIT,
        "max_boxes": dag_view.MAX_JOB_BOXES,
        "parents": parents,
        "children": children,
        "max_depth": MAX_DEPTH,
        "data_id_slice": ",".join(f"{k}:{v}" for k, v in (job["data_id"] or {}).items()),
    }
    return respond(
        request,
        "pandamon/job_dag.html",
        context,
        lambda: {
            "pandaid": pandaid,
            "workflow": job["workflow_id"],
            "depth": depth,
            "cap": cap,
            "truncated": truncated,
            "collapsed": graph["kind"] == "label",
            "parents": parents,
            "children": children,
            "nodes": graph["nodes"],
            "edges": graph["edges"],
            "final_edges": graph["final_edges"],
        },
    )
