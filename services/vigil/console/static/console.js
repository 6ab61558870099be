/* Vigil console: draws the per-variant charts with uPlot from the JSON the page embeds, and reports the live
   feed's state. Everything else is server-rendered HTML (htmx handles the server-sent events). */
(function () {
  "use strict";
  var PALETTE = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490"];

  /* Window ends in UTC, as the tables beside the charts show them. */
  function utcTimes(u, splits) {
    return splits.map(function (v) { return new Date(v * 1000).toISOString().slice(11, 19); });
  }

  /* A time axis over one window only: a minute each side of it. Before this is asked, uPlot 1.6 widens a one-point
     time scale by 86,400,000 (a day in milliseconds, on our axis of seconds: a thousand days), so min === max never
     arrives here, and ticks at day boundaries all read 00:00:00. */
  function timeRange(u, min, max) {
    var xs = u.data[0];
    return xs.length === 1 ? [xs[0] - 60, xs[0] + 60] : [min, max];
  }

  /* uPlot sets its scales in a microtask after construction: once it is ready, the element says it is drawn and
     over which x range (for the browser tests: the axis labels are on the canvas). */
  function marksWhenDrawn(el) {
    return { ready: [function (u) {
      el.setAttribute("data-x-range", u.scales.x.min + " " + u.scales.x.max);
      el.setAttribute("data-drawn", "true");
    }] };
  }

  /* The monitoring charts (monitoring.js, loaded after this file) draw with the same axis and marks. */
  window.VigilCharts = { utcTimes: utcTimes, timeRange: timeRange, marksWhenDrawn: marksWhenDrawn };

  /* A share (error rate) starts at 0 and shows at least 0..5 %, so a flat zero line reads as zero. */
  function shareRange(u, min, max) { return [0, Math.max(0.05, max * 1.1)]; }

  function drawCharts() {
    var holder = document.getElementById("chart-data");
    if (!holder || typeof uPlot === "undefined") { return; }
    var charts = JSON.parse(holder.textContent);
    charts.forEach(function (c) {
      var el = document.querySelector('[data-chart="' + c.id + '"]');
      if (!el || c.x.length === 0) { return; }
      var series = [{}];
      var data = [c.x];
      c.series.forEach(function (s, i) {
        series.push({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false,
                      points: { show: true, size: 5 } });
        data.push(s.values);
      });
      var time = c.time !== false;
      var x = time ? { time: true, range: timeRange } : { time: false };
      var opts = {
        width: Math.max(280, el.clientWidth || 420), height: 200, series: series,
        scales: c.unit === "share" ? { x: x, y: { range: shareRange } } : { x: x },
        axes: [time ? { stroke: "#374151", grid: { stroke: "#e5e7eb" }, values: utcTimes }
                    : { stroke: "#374151", grid: { stroke: "#e5e7eb" }, label: c.x_label || "step" },
               { stroke: "#374151", grid: { stroke: "#e5e7eb" }, label: c.unit, size: 60 }],
        legend: { live: true },
        hooks: marksWhenDrawn(el)
      };
      new uPlot(opts, data, el);
    });
  }

  function watchFeed() {
    var feed = document.getElementById("feed");
    var state = document.getElementById("feed-state");
    if (!feed || !state) { return; }
    document.body.addEventListener("htmx:sseOpen", function () { state.textContent = "Live: newest first, from the audit log."; });
    document.body.addEventListener("htmx:sseError", function () { state.textContent = "Feed interrupted; reconnecting…"; });
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(); watchFeed(); });
})();
