/* Vigil console: draws the graphs a page embeds as JSON (the audit's why chain, a model's lineage). dagre (from the
   npm registry, package-lock.json) lays the graph out; this file only turns dagre's coordinates into SVG elements —
   geometry as attributes, looks from graphs.css, nothing inline, so the strict CSP holds.
   Every node is a keyboard-focusable button: Enter, Space or a click shows its evidence, copied from the page's own
   text list of the same graph (the node names its item), so picture and list cannot disagree. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var PAD_X = 12, LINE = 17, PAD_Y = 9, MIN_W = 120, MAX_CHARS = 46;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function clip(text) {
    text = String(text == null ? "" : text);
    return text.length > MAX_CHARS ? text.slice(0, MAX_CHARS - 1) + "…" : text;
  }

  /* A smooth path through dagre's edge points: straight ends, quadratic bends through the midpoints between. */
  function pathOf(points) {
    var d = "M" + points[0].x + "," + points[0].y;
    for (var i = 1; i < points.length - 1; i++) {
      var mx = (points[i].x + points[i + 1].x) / 2, my = (points[i].y + points[i + 1].y) / 2;
      d += " Q" + points[i].x + "," + points[i].y + " " + mx + "," + my;
    }
    var last = points[points.length - 1];
    return d + " L" + last.x + "," + last.y;
  }

  function showEvidence(graph, node, panel) {
    var item = document.getElementById(node.getAttribute("data-item"));
    graph.querySelectorAll(".gnode").forEach(function (n) {
      var on = n === node;
      n.classList.toggle("selected", on);
      n.setAttribute("aria-pressed", on ? "true" : "false");
    });
    while (panel.firstChild) { panel.removeChild(panel.firstChild); }
    if (!item) { return; }
    var copy = item.cloneNode(true);
    copy.removeAttribute("id");
    copy.querySelectorAll("[id]").forEach(function (c) { c.removeAttribute("id"); });
    var body = document.createElement("div");
    body.className = "evidence-body";
    body.setAttribute("data-node", node.getAttribute("data-node"));
    while (copy.firstChild) { body.appendChild(copy.firstChild); }
    panel.appendChild(body);
    var more = document.createElement("a");
    more.href = "#" + item.id;
    more.textContent = "Show it in the list";
    panel.appendChild(more);
  }

  function draw(canvas) {
    var id = canvas.getAttribute("data-graph");
    var holder = document.getElementById("graph-" + id + "-data");
    var panel = document.getElementById("graph-" + id + "-evidence");
    if (!holder || !panel || typeof dagre === "undefined") { return; }
    var data = JSON.parse(holder.textContent);
    if (!data.nodes.length) { return; }
    canvas.textContent = "";
    var svg = el("svg", { "class": "graph-svg", role: "group", "aria-label": canvas.closest("figure").querySelector("figcaption").textContent }, canvas);
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "arrow-" + id, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7",
                                markerHeight: "7", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrow-head" }, marker);
    var edgeLayer = el("g", { "class": "edges", "aria-hidden": "true" }, svg);
    var nodeLayer = el("g", { "class": "nodes" }, svg);

    var g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: data.direction || "TB", nodesep: 22, ranksep: data.direction === "LR" ? 56 : 34,
                 edgesep: 12, marginx: 6, marginy: 6 });
    g.setDefaultEdgeLabel(function () { return {}; });

    var shapes = {};
    data.nodes.forEach(function (n) {
      var node = el("g", { "class": "gnode family-" + n.family, tabindex: "0", role: "button", "aria-pressed": "false",
                           "aria-label": n.label, "data-node": n.id, "data-item": n.item }, nodeLayer);
      if (n.seq != null) { node.setAttribute("data-seq", String(n.seq)); }
      node.setAttribute("data-title", n.title);
      var box = el("rect", { rx: "7", ry: "7" }, node);
      var texts = [n.title].concat(n.lines || []).map(function (line, i) {
        var t = el("text", { "class": i === 0 ? "title" : "line" }, node);
        t.textContent = clip(line);
        return t;
      });
      var width = Math.max(MIN_W, Math.max.apply(null, texts.map(function (t) { return t.getComputedTextLength(); })) + 2 * PAD_X);
      var height = texts.length * LINE + 2 * PAD_Y;
      shapes[n.id] = { node: node, box: box, texts: texts };
      g.setNode(n.id, { width: Math.ceil(width), height: height });
    });
    data.edges.forEach(function (e, i) {
      if (!shapes[e.source] || !shapes[e.target]) { return; }
      var label = e.label ? { label: e.label, width: e.label.length * 7 + 8, height: 14, labelpos: "c" } : {};
      label.kind = e.kind;
      g.setEdge(e.source, e.target, label, "e" + i);
    });
    dagre.layout(g);

    g.nodes().forEach(function (key) {
      var at = g.node(key), s = shapes[key];
      var x = at.x - at.width / 2, y = at.y - at.height / 2;
      s.node.setAttribute("transform", "translate(" + x + "," + y + ")");
      s.box.setAttribute("width", at.width);
      s.box.setAttribute("height", at.height);
      s.texts.forEach(function (t, i) {
        t.setAttribute("x", PAD_X);
        t.setAttribute("y", PAD_Y + (i + 1) * LINE - 4);
      });
    });
    g.edges().forEach(function (key) {
      var e = g.edge(key);
      el("path", { d: pathOf(e.points), "class": "edge edge-" + (e.kind || "plain"), "marker-end": "url(#arrow-" + id + ")" }, edgeLayer);
      if (e.label) {
        var t = el("text", { x: e.x, y: e.y + 4, "class": "edge-label", "text-anchor": "middle" }, edgeLayer);
        t.textContent = e.label;
      }
    });
    var size = g.graph();
    svg.setAttribute("width", Math.ceil(size.width));
    svg.setAttribute("height", Math.ceil(size.height));
    svg.setAttribute("viewBox", "0 0 " + Math.ceil(size.width) + " " + Math.ceil(size.height));

    var order = Array.prototype.slice.call(nodeLayer.querySelectorAll(".gnode"));
    order.forEach(function (node, i) {
      node.addEventListener("click", function () { showEvidence(canvas, node, panel); });
      node.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          showEvidence(canvas, node, panel);
        } else if (ev.key === "ArrowDown" || ev.key === "ArrowRight" || ev.key === "ArrowUp" || ev.key === "ArrowLeft") {
          ev.preventDefault();
          var step = (ev.key === "ArrowDown" || ev.key === "ArrowRight") ? 1 : -1;
          order[(i + step + order.length) % order.length].focus();
        }
      });
    });
    var first = data.nodes.filter(function (n) { return n.first; })[0];
    if (first) { showEvidence(canvas, shapes[first.id].node, panel); }
    canvas.setAttribute("data-drawn", "true");
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-graph]").forEach(draw);
  });
})();
