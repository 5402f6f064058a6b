// The monitor's DAGs and workflow timeline, drawn as SVG from JSON embedded in the page
// (<script type="application/json" data-dag="ID"> / data-timeline="ID" next to <div id="ID">).
// DAG layout: the vendored dagre (static/js/dagre.min.js, docs/decisions/0011-dag-layout-in-the-browser.md).
// Boxes: title, job counts, a bar stacked by state; one arrowhead (marker-end) per edge; final
// jobs' "after everything" edges dashed; wheel zooms, drag pans, a click on a box opens its page.
// Nothing is fetched: the data comes with the page. Labels stay text (textContent), never markup.
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var counter = 0;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function countsLine(node, data) {
    if (data.kind === "job") return node.state;
    var parts = [node.total + (node.total === 1 ? " job" : " jobs")];
    data.states.forEach(function (s) { if (node.counts[s]) parts.push(node.counts[s] + " " + s); });
    return parts.join(" · ");
  }

  // Pan (drag) and zoom (wheel, around the pointer) by moving the viewBox. A drag of more than a
  // few pixels swallows the click that ends it, so panning never opens a node.
  function panZoom(svg, box) {
    var vb = { x: box.x, y: box.y, w: box.w, h: box.h };
    function apply() { svg.setAttribute("viewBox", [vb.x, vb.y, vb.w, vb.h].join(" ")); }
    apply();
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = svg.getBoundingClientRect();
      var px = vb.x + ((ev.clientX - r.left) / r.width) * vb.w;
      var py = vb.y + ((ev.clientY - r.top) / r.height) * vb.h;
      var f = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
      var w = Math.min(Math.max(vb.w * f, 50), box.w * 20);
      f = w / vb.w;
      vb.x = px - (px - vb.x) * f; vb.y = py - (py - vb.y) * f; vb.w *= f; vb.h *= f;
      apply();
    }, { passive: false });
    var drag = null, moved = false;
    svg.addEventListener("pointerdown", function (ev) {
      drag = { x: ev.clientX, y: ev.clientY, vx: vb.x, vy: vb.y }; moved = false;
    });
    window.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      var r = svg.getBoundingClientRect();
      var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) moved = true;
      if (!moved) return;
      vb.x = drag.vx - dx * (vb.w / r.width); vb.y = drag.vy - dy * (vb.h / r.height);
      apply();
    });
    window.addEventListener("pointerup", function () { drag = null; });
    svg.addEventListener("click", function (ev) { if (moved) { ev.preventDefault(); ev.stopPropagation(); moved = false; } }, true);
    svg.dataset.zoomable = "1";
  }

  function drawDag(target, data) {
    var id = "dag" + (++counter);
    var g = new dagre.graphlib.Graph({ multigraph: false });
    g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 56, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(function () { return {}; });
    var single = data.kind === "job";
    data.nodes.forEach(function (n) {
      var chars = Math.max(String(n.title).length, single ? 8 : countsLine(n, data).length * 0.8);
      g.setNode(String(n.id), { width: Math.min(Math.max(chars * 7 + 20, 90), 320), height: single ? 34 : 58 });
    });
    var all = data.edges.map(function (e) { return [e, false]; })
      .concat(data.final_edges.map(function (e) { return [e, true]; }));
    all.forEach(function (pair) { g.setEdge(String(pair[0][0]), String(pair[0][1])); });
    var t0 = performance.now();
    dagre.layout(g);
    var layoutMs = performance.now() - t0;
    var gw = g.graph().width || 100, gh = g.graph().height || 100;

    var svg = el("svg", { class: "dag-svg", role: "img", "aria-label": "DAG of " + data.nodes.length + " nodes" });
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: id + "-arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrowhead" }, marker);
    var view = el("g", { class: "dag-viewport" }, svg);
    var edges = el("g", { class: "dag-edges" }, view);
    all.forEach(function (pair) {
      var e = pair[0];
      var pts = g.edge(String(e[0]), String(e[1])).points;
      var d = "M " + pts.map(function (p) { return p.x.toFixed(1) + " " + p.y.toFixed(1); }).join(" L ");
      var path = el("path", { d: d, class: "dag-edge" + (pair[1] ? " final" : ""), "marker-end": "url(#" + id + "-arrow)",
        "data-from": e[0], "data-to": e[1] }, edges);
      el("title", {}, path).textContent = e[0] + " → " + e[1] + (pair[1] ? " (runs after everything)" : "");
    });
    var nodes = el("g", { class: "dag-nodes" }, view);
    data.nodes.forEach(function (n) {
      var p = g.node(String(n.id));
      var x = p.x - p.width / 2, y = p.y - p.height / 2;
      var link = el("a", { href: n.url || "#", class: "dag-link" }, nodes);
      var box = el("g", { class: "dag-node" + (n.final ? " final" : "") + (n.focus ? " focus" : ""),
        "data-id": n.id, "data-state": n.state || "", "data-total": n.total, transform: "translate(" + x + "," + y + ")" }, link);
      el("title", {}, box).textContent = n.text + (n.final ? " — final: runs after every other job has ended" : "");
      el("rect", { class: "dag-box", width: p.width, height: p.height, rx: 4,
        stroke: data.colours[n.state] || "#9aa5b1" }, box);
      var title = el("text", { class: "dag-title", x: 8, y: 14 }, box);
      title.textContent = (n.final ? "◆ " : "") + n.title;
      var line = el("text", { class: "dag-counts", x: 8, y: single ? 27 : 32 }, box);
      line.textContent = countsLine(n, data);
      var bar = el("g", { class: "dag-bar", transform: "translate(8," + (p.height - (single ? 6 : 18)) + ")" }, box);
      var width = p.width - 16, at = 0, total = n.total || 1;
      data.states.forEach(function (s) {
        var k = n.counts[s] || 0;
        if (!k) return;
        var w = (width * k) / total;
        var seg = el("rect", { x: at.toFixed(2), y: 0, width: w.toFixed(2), height: single ? 3 : 10,
          fill: data.colours[s] || "#999", "data-state": s, "data-count": k }, bar);
        el("title", {}, seg).textContent = k + " " + s;
        at += w;
      });
    });
    target.textContent = "";
    target.appendChild(svg);
    panZoom(svg, { x: 0, y: 0, w: Math.max(gw, 200), h: Math.max(gh, 120) });
    svg.style.height = Math.min(Math.max(gh, 160), 640) + "px";
    target.dataset.layoutMs = layoutMs.toFixed(1);
    target.dataset.nodes = data.nodes.length;
    target.dataset.edges = all.length;
    target.classList.add("drawn");
  }

  function drawTimeline(target, data) {
    target.textContent = "";
    if (!data.bars.length) { target.textContent = "No attempt has started yet."; target.classList.add("drawn"); return; }
    // An attempt still running has no end: it runs up to now.
    var now = Date.now(), open = data.bars.some(function (b) { return !b.end; });
    var t0 = Date.parse(data.start), t1 = Math.max(Date.parse(data.end), open ? now : 0);
    var span = Math.max(t1 - t0, 1000);
    var left = 140, laneH = 8, maxLanes = 8, width = Math.max(target.clientWidth || 900, 400) - left - 10;
    function px(t) { return left + ((t - t0) / span) * width; }
    // Lanes: within a row, an attempt takes the first lane free at its start (interval packing),
    // so attempts that overlap in time sit one above the other; past maxLanes they share the lane
    // that frees first.
    var rows = data.rows.map(function () { return { ends: [] }; });
    var placed = data.bars.map(function (b) {
      var s = Date.parse(b.start), e = b.end ? Date.parse(b.end) : now, ends = rows[b.row].ends, lane = -1;
      for (var i = 0; i < ends.length; i++) if (ends[i] <= s) { lane = i; break; }
      if (lane < 0 && ends.length < maxLanes) { lane = ends.length; ends.push(e); }
      if (lane < 0) lane = ends.indexOf(Math.min.apply(null, ends));
      ends[lane] = Math.max(e, s + (2 * span) / width);
      return { bar: b, s: s, e: e, lane: lane };
    });
    var y = 0, tops = rows.map(function (r) { var top = y; y += Math.max(r.ends.length, 1) * laneH + 10; return top; });
    var height = y + 28;
    var svg = el("svg", { class: "timeline-svg", width: left + width + 10, height: height });
    data.rows.forEach(function (label, i) {
      el("rect", { x: 0, y: tops[i], width: left + width, height: Math.max(rows[i].ends.length, 1) * laneH + 10, class: i % 2 ? "row odd" : "row" }, svg);
      var t = el("text", { x: 4, y: tops[i] + 14, class: "timeline-label" }, svg);
      t.textContent = label;
    });
    var bars = el("g", { class: "timeline-bars" }, svg);
    placed.forEach(function (p) {
      var b = p.bar, x0 = px(p.s), x1 = px(p.e);
      var rect = el("rect", { x: x0.toFixed(1), y: tops[b.row] + 5 + p.lane * laneH, width: Math.max(x1 - x0, 2).toFixed(1),
        height: laneH - 2, fill: data.colours[b.state] || "#999", class: "timeline-bar",
        "data-state": b.state, "data-pandaid": b.pandaid, "data-attempt": b.attemptnr }, bars);
      el("title", {}, rect).textContent = "job " + b.pandaid + " attempt " + b.attemptnr + ": " + b.state +
        " " + b.start.slice(0, 19).replace("T", " ") + " UTC → " + (b.end ? b.end.slice(0, 19).replace("T", " ") + " UTC" : "now (running)");
    });
    var axis = el("g", { class: "timeline-axis" }, svg);
    for (var k = 0; k <= 4; k++) {
      var x = left + (width * k) / 4;
      el("line", { x1: x, x2: x, y1: 0, y2: height - 24 }, axis);
      var lbl = el("text", { x: x, y: height - 8, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" }, axis);
      lbl.textContent = new Date(t0 + (span * k) / 4).toISOString().slice(5, 16).replace("T", " ");
    }
    target.appendChild(svg);
    target.dataset.bars = data.bars.length;
    target.classList.add("drawn");
  }

  function draw(root) {
    root.querySelectorAll("script[data-dag]").forEach(function (node) {
      var target = document.getElementById(node.dataset.dag);
      if (target && window.dagre) drawDag(target, JSON.parse(node.textContent));
    });
    root.querySelectorAll("script[data-timeline]").forEach(function (node) {
      var target = document.getElementById(node.dataset.timeline);
      if (target) drawTimeline(target, JSON.parse(node.textContent));
    });
  }
  window.ailuroDag = { drawDag: drawDag, drawTimeline: drawTimeline };
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (ev) { draw(ev.detail.target || document); });
})();
