// Draws every embedded plotly figure (<script type="application/json" data-figure="ID">) into the
// element with that id, and again after htmx swaps a partial in. A point with a URL in customdata
// (DAG nodes) opens it on click. No data is fetched here: figures come with the page.
(function () {
  function draw(root) {
    root.querySelectorAll("script[data-figure]").forEach(function (node) {
      var target = document.getElementById(node.dataset.figure);
      if (!target || !window.Plotly) return;
      var fig = JSON.parse(node.textContent);
      Plotly.react(target, fig.data, fig.layout, { displaylogo: false, responsive: true });
      target.classList.add("drawn");
      if (!target.dataset.clickBound) {
        target.dataset.clickBound = "1";
        target.on("plotly_click", function (ev) {
          var url = ev.points && ev.points[0] && ev.points[0].customdata;
          if (typeof url === "string" && url.charAt(0) === "/") window.location.href = url;
        });
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (ev) { draw(ev.detail.target || document); });
})();
