/* Vigil console, monitoring charts: draws with uPlot the JSON block #monitoring-chart-data — feature histograms
   (reference vs window shares, grouped bars on the same bins), accuracy estimated with its ±3σ band vs realised,
   and lines over time (calibration, fairness gaps with their threshold). Every figure is also in a table beside
   its chart; this file only draws. */
(function () {
  "use strict";
  /* Non-text contrast ≥ 3:1 on white for every stroke (WCAG 1.4.11). */
  var REFERENCE = { fill: "#cbd5e1", stroke: "#475569" };
  var WINDOW = { fill: "#1d4ed8", stroke: "#1e3a8a" };
  var PALETTE = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490"];
  var AXIS = { stroke: "#374151", grid: { stroke: "#e5e7eb" } };

  var utcTimes = window.VigilCharts.utcTimes;  /* console.js, loaded first */
  var timeRange = window.VigilCharts.timeRange;
  var marksWhenDrawn = window.VigilCharts.marksWhenDrawn;

  function pct(v) { return v == null ? "–" : (v * 100).toFixed(1) + " %"; }

  function width(el) { return Math.max(260, el.clientWidth || 400); }

  function histogram(c, el) {
    var x = c.ticks.map(function (_, i) { return i; });
    var bars = uPlot.paths.bars;
    var opts = {
      width: width(el), height: 190,
      scales: { x: { time: false, range: [-0.6, x.length - 0.4] }, y: { range: [0, null] } },
      series: [
        { label: "bin", value: function (u, i) { return i == null ? "–" : c.bins[i]; } },
        { label: c.series[0].label, fill: REFERENCE.fill, stroke: REFERENCE.stroke, width: 1,
          paths: bars({ size: [0.42, 60], align: -1 }), points: { show: false }, value: function (u, v) { return pct(v); } },
        { label: c.series[1].label, fill: WINDOW.fill, stroke: WINDOW.stroke, width: 1,
          paths: bars({ size: [0.42, 60], align: 1 }), points: { show: false }, value: function (u, v) { return pct(v); } }
      ],
      axes: [
        { stroke: AXIS.stroke, grid: { show: false }, space: 44, incrs: [1, 2, 3, 4, 5, 10],
          values: function (u, splits) { return splits.map(function (i) { return c.ticks[i] == null ? "" : c.ticks[i]; }); },
          label: c.feature_kind === "categorical" ? "category" : "value (bin lower bound)" },
        { stroke: AXIS.stroke, grid: AXIS.grid, size: 52, label: "share",
          values: function (u, splits) { return splits.map(function (v) { return Math.round(v * 100) + "%"; }); } }
      ],
      legend: { live: true },
      hooks: marksWhenDrawn(el)
    };
    return new uPlot(opts, [x, c.series[0].values, c.series[1].values], el);
  }

  function band(c, el) {
    var colour = "#1d4ed8";
    var opts = {
      width: width(el), height: 200,
      scales: { x: { time: true, range: timeRange }, y: { range: function (u, min, max) { return [Math.max(0, min - 0.05), Math.min(1, max + 0.05)]; } } },
      series: [
        {},
        { label: c.series[0].label, stroke: colour, width: 2, dash: [6, 4], points: { show: true, size: 5 } },
        { label: c.series[1].label, stroke: "#64748b", width: 1, points: { show: false } },
        { label: c.series[2].label, stroke: "#64748b", width: 1, points: { show: false } },
        { label: c.series[3].label, stroke: "#b45309", width: 2, points: { show: true, size: 6 } }
      ],
      bands: [{ series: [3, 2], fill: "rgba(29, 78, 216, 0.12)" }],
      axes: [{ stroke: AXIS.stroke, grid: AXIS.grid, values: utcTimes },
             { stroke: AXIS.stroke, grid: AXIS.grid, size: 60, label: c.unit }],
      legend: { live: true },
      hooks: marksWhenDrawn(el)
    };
    var data = [c.x].concat(c.series.map(function (s) { return s.values; }));
    return new uPlot(opts, data, el);
  }

  function lines(c, el) {
    var series = [{}];
    c.series.forEach(function (s, i) {
      series.push(s.threshold  /* one window: no line to dash, so its point shows where the threshold is */
        ? { label: s.label, stroke: "#991b1b", width: 2, dash: [4, 4], points: { show: c.x.length === 1, size: 7 } }
        : { label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, points: { show: true, size: 5 } });
    });
    var opts = {
      width: width(el), height: 200, series: series,
      scales: { x: { time: true, range: timeRange }, y: { range: function (u, min, max) { return [0, Math.max(max * 1.15, 0.01)]; } } },
      axes: [{ stroke: AXIS.stroke, grid: AXIS.grid, values: utcTimes },
             { stroke: AXIS.stroke, grid: AXIS.grid, size: 60, label: c.unit }],
      legend: { live: true },
      hooks: marksWhenDrawn(el)
    };
    var data = [c.x].concat(c.series.map(function (s) { return s.values; }));
    return new uPlot(opts, data, el);
  }

  var DRAW = { hist: histogram, band: band, lines: lines };

  function draw() {
    var holder = document.getElementById("monitoring-chart-data");
    if (!holder || typeof uPlot === "undefined") { return; }
    JSON.parse(holder.textContent).forEach(function (c) {
      var el = document.querySelector('[data-mchart="' + c.id + '"]');
      var fn = DRAW[c.kind];
      if (!el || !fn || (c.x && c.x.length === 0)) { return; }
      fn(c, el);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
