"""Layout and drawing time of the monitor's SVG DAG (static/js/dag.js with the vendored dagre) in
Debian's headless Chromium, for layered DAGs of about 50, 500 and 3,000 nodes.

Each graph is built like a pipeline's job graph: `labels` layers, each job with the job of its data
id in the layer above as parent plus up to `--extra` random other parents from that layer. Prints JSON: per size the nodes, edges, dagre's layout time and the
whole draw (layout + SVG) in milliseconds, median of `--repeat` runs. No database is touched.

    flock /tmp/ailuro-heavy.lock nice -n 5 python bench/dag_layout.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium  # noqa: E402

STATES = ["defined", "running", "finished", "failed"]


def layered_graph(n: int, labels: int, extra: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    per = max(1, n // labels)
    layers = [list(range(i * per, (i + 1) * per)) for i in range(labels)]
    nodes = [
        {
            "id": i,
            "title": f"{i} label{i // per}_job{i % per}",
            "text": str(i),
            "state": rng.choice(STATES),
            "url": f"/job/{i}/",
            "counts": {},
            "total": 1,
            "final": False,
        }
        for layer in layers
        for i in layer
    ]
    for node in nodes:
        node["counts"] = {node["state"]: 1}
    edges = [
        [p, c]
        for above, layer in zip(layers, layers[1:], strict=False)
        for c in layer
        for p in sorted({c - per, *rng.choices(above, k=rng.randint(0, extra))})
    ]
    return {
        "kind": "job",
        "nodes": nodes,
        "edges": edges,
        "final_edges": [],
        "colours": dict.fromkeys(STATES, "#888"),
        "states": STATES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500,3000")
    parser.add_argument("--labels", type=int, default=6)
    parser.add_argument("--extra", type=int, default=1, help="random extra parents per job, at most")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scripts = "".join(
        f"<script>{(ROOT / 'static' / 'js' / name).read_text()}</script>"
        for name in ("dagre.min.js", "dag.js")
    )
    results = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_content(f"<!doctype html><html><body><div id='t'></div>{scripts}</body></html>")
        for size in (int(s) for s in args.sizes.split(",")):
            graph = layered_graph(size, args.labels, args.extra, seed=size)
            layout, total = [], []
            for _ in range(args.repeat):
                ms = page.evaluate(
                    """g => { const t = document.getElementById('t'); const t0 = performance.now();
                       window.ailuroDag.drawDag(t, g);
                       return [Number(t.dataset.layoutMs), performance.now() - t0]; }""",
                    graph,
                )
                layout.append(ms[0])
                total.append(ms[1])
            results.append(
                row := {
                    "nodes": len(graph["nodes"]),
                    "edges": len(graph["edges"]),
                    "layout_ms": round(statistics.median(layout), 1),
                    "draw_ms": round(statistics.median(total), 1),
                }
            )
            print(json.dumps(row), file=sys.stderr, flush=True)
        version = browser.version
    print(
        json.dumps(
            {
                "benchmark": "dag_layout",
                "library": "@dagrejs/dagre 3.1.3",
                "extra_parents": args.extra,
                "chromium": version,
                "runs": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
