// saas-llm dashboard and portal: charts (uPlot), live job updates (SSE + htmx), confirmations.
(function () {
  "use strict";
  var COLORS = ["#0b57d0", "#c5221f", "#188038", "#b06000", "#6f42c1", "#00838f", "#ad1457",
    "#5f6368", "#1e8e3e", "#e37400", "#3949ab", "#795548"];

  function chart(el) {
    if (el.dataset.ready || typeof uPlot === "undefined") return;
    var source = document.getElementById(el.dataset.chart);
    if (!source) return;
    var data = JSON.parse(source.textContent);
    var names = Object.keys(data.series);
    if (!data.x.length || !names.length) return;
    el.dataset.ready = "1";
    var series = [{}].concat(names.map(function (name, i) {
      return { label: name, stroke: COLORS[i % COLORS.length], width: 2,
        points: { show: true, size: 5 } };
    }));
    var rows = [data.x].concat(names.map(function (n) { return data.series[n]; }));
    var opts = { width: Math.max(280, el.clientWidth), height: 240, series: series,
      axes: [{}, { size: 70 }], scales: { x: { time: data.time !== false } } };
    var plot = new uPlot(opts, rows, el);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(280, el.clientWidth), height: 240 });
    });
  }

  function charts(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(chart);
  }

  function liveJob(el) {
    if (!window.EventSource || el.dataset.terminal === "true") return;
    var source = new EventSource(el.dataset.events);
    source.addEventListener("job", function (event) {
      var job = JSON.parse(event.data);
      htmx.ajax("GET", el.dataset.live, { target: "#" + el.id, swap: "innerHTML" });
      if (["succeeded", "failed", "cancelled", "expired"].indexOf(job.status) >= 0) {
        source.close();
      }
    });
  }

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", function () {
    charts(document);
    document.querySelectorAll("[data-events]").forEach(liveJob);
  });
  document.addEventListener("htmx:afterSettle", function (event) { charts(event.detail.elt); });
})();
