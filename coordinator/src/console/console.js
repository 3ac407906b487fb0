// faultline console: fills the Live run page from the run's Server-Sent
// Events. Text only goes in through textContent (never innerHTML).
"use strict";
(function () {
  var run = document.getElementById("run");
  if (!run || !window.EventSource) { return; }
  var id = run.getAttribute("data-run");
  var started = Number(run.getAttribute("data-started")) || 0;
  var status = document.getElementById("stream");
  var rows = {};

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  function fill(tr, cells) {
    while (tr.firstChild) { tr.removeChild(tr.firstChild); }
    cells.forEach(function (c) { cell(tr, c); });
  }
  function row(table, key, cells) {
    var k = table + "\u0000" + key;
    var tr = rows[k];
    if (!tr) {
      tr = document.createElement("tr");
      document.querySelector("#" + table + " tbody").appendChild(tr);
      if (key !== null) { rows[k] = tr; }
    }
    fill(tr, cells);
    return tr;
  }
  function at(ms) { return started ? new Date(started + ms).toISOString() : ""; }
  function secs(ms) { return "+" + (ms / 1000).toFixed(1) + " s"; }
  function log(text) {
    var li = document.createElement("li");
    li.textContent = text;
    document.getElementById("log").appendChild(li);
  }
  function on(kind, f) {
    es.addEventListener(kind, function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      f(d);
    });
  }

  var es = new EventSource("/runs/" + encodeURIComponent(id) + "/events");
  es.onopen = function () { status.textContent = "live"; };
  es.onerror = function () {
    if (status.textContent !== "ended") { status.textContent = "disconnected"; }
    es.close();
  };
  // Live probe charts: one inline SVG per probe, drawn here (the CSP
  // allows no inline script or style; SVG presentation attributes are
  // markup). x is time since the run started; y the latency of successful
  // samples in ms, or the measured value for probes that measure one.
  // Failed samples are red ticks on the x axis; the blue band is the
  // baseline's p5-p95 (sent once the baseline has ended); the red shade is
  // the fault window, from the inject phase until recover begins (restore
  // acknowledged).
  var NS = "http://www.w3.org/2000/svg";
  var W = 640, H = 190, L = 56, R = 12, T = 18, B = 26;
  var charts = {};
  var phaseAt = {};
  var latest = 0;

  function el(parent, name, attrs) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    parent.appendChild(e);
    return e;
  }
  function text(parent, x, y, s, attrs) {
    var t = el(parent, "text", Object.assign({ x: x, y: y, "font-size": 10, fill: "#333333" }, attrs || {}));
    t.textContent = s;
    return t;
  }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1); }
  function chartOf(name) {
    var c = charts[name];
    if (c) { return c; }
    var box = document.createElement("figure");
    box.className = "probe-chart";
    var svg = el(box, "svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H,
      role: "img", "class": "chart live", "data-probe": name });
    svg.setAttribute("aria-label", "probe " + name);
    document.getElementById("charts").appendChild(box);
    c = charts[name] = { svg: svg, points: [], band: null };
    return c;
  }
  function draw(name) {
    var c = charts[name];
    var svg = c.svg;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var byValue = c.band ? c.band.unit === "value" : c.points.some(function (p) { return p[3] !== null; });
    var fig = function (p) { return byValue ? p[3] : (p[1] ? p[2] : null); };
    // The axis grows with the run (a replayed start has no planned length).
    var end = Math.max(latest, 1);
    var top = c.band ? c.band.high : 0, bottom = 0;
    c.points.forEach(function (p) {
      var v = fig(p);
      if (v !== null) { top = Math.max(top, v); bottom = Math.min(bottom, v); }
    });
    if (c.band) { bottom = Math.min(bottom, c.band.low); }
    top = top <= bottom ? bottom + 1 : top + (top - bottom) * 0.08;
    var x = function (ms) { return L + (W - L - R) * Math.min(ms, end) / end; };
    var y = function (v) { return T + (H - T - B) * (1 - (v - bottom) / (top - bottom)); };
    el(svg, "rect", { x: 0, y: 0, width: W, height: H, fill: "#ffffff" });
    text(svg, L, 12, name + " - " + (byValue ? "value" : "latency of successful samples (ms)"), { "font-size": 11 });
    if (phaseAt.inject !== undefined) {
      var to = phaseAt.recover !== undefined ? phaseAt.recover : latest;
      el(svg, "rect", { "class": "fault-window", x: x(phaseAt.inject), y: T,
        width: Math.max(x(to) - x(phaseAt.inject), 1), height: H - T - B, fill: "#f8d7d7" });
    }
    if (c.band) {
      // At least 3 px high: a narrow band stays visible beside a tall spike.
      var band = el(svg, "rect", { "class": "band", x: L, y: y(c.band.high), width: W - L - R,
        height: Math.max(y(c.band.low) - y(c.band.high), 3), fill: "#cfe3f5", "fill-opacity": 0.8 });
      el(band, "title", {}).textContent = "baseline p5-p95 of " + c.band.samples + " samples: " +
        fmt(c.band.low) + " to " + fmt(c.band.high) + (c.band.unit === "ms" ? " ms" : "");
      svg.setAttribute("data-band", c.band.low + "-" + c.band.high);
    }
    el(svg, "line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888888" });
    el(svg, "line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888888" });
    text(svg, L - 4, T + 8, fmt(top), { "text-anchor": "end" });
    text(svg, L - 4, H - B, fmt(bottom), { "text-anchor": "end" });
    text(svg, L, H - 8, "0 s");
    text(svg, W - R, H - 8, (end / 1000).toFixed(1) + " s", { "text-anchor": "end" });
    var line = [], fails = 0;
    c.points.forEach(function (p) {
      var v = fig(p);
      if (v === null) {
        fails += 1;
        el(svg, "line", { "class": "failure", x1: x(p[0]), y1: H - B - 8, x2: x(p[0]), y2: H - B, stroke: "#c62828", "stroke-width": 2 });
      } else {
        line.push(x(p[0]).toFixed(1) + "," + y(v).toFixed(1));
      }
    });
    if (line.length) {
      el(svg, "polyline", { fill: "none", stroke: "#1f6fb2", "stroke-width": 1.5, points: line.join(" ") });
    }
    svg.setAttribute("data-points", line.length);
    svg.setAttribute("data-failures", fails);
    svg.setAttribute("data-from-ms", c.points.length ? c.points[0][0] : "");
  }
  function redraw() { Object.keys(charts).forEach(draw); }

  var phaseN = 0;
  on("started", function (d) { log(secs(d.elapsed_ms) + " started " + d.experiment); });
  on("phase", function (d) {
    if (phaseAt[d.phase] === undefined) { phaseAt[d.phase] = d.elapsed_ms; }
    latest = Math.max(latest, d.elapsed_ms);
    if (d.phase === "inject" || d.phase === "recover") { redraw(); }
    phaseN += 1;
    row("phases", "p" + phaseN, [d.phase, at(d.elapsed_ms), secs(d.elapsed_ms),
      d.planned_ms ? (d.planned_ms / 1000).toFixed(1) + " s" : "-"]);
  });
  on("fault", function (d) {
    row("targets", d.agent_id + "/" + d.fault_id, [d.agent_id, d.fault_id, d.state, d.detail,
      d.backend, d.at_unix_ms ? new Date(d.at_unix_ms).toISOString() : ""]);
  });
  on("probe", function (d) {
    row("probes", d.probe, [d.probe, d.phase, String(d.samples), String(d.successes),
      (d.last_latency_us / 1000).toFixed(1) + " ms", d.last_error]);
    var c = chartOf(d.probe);
    (d.points || []).forEach(function (p) { c.points.push(p); });
    // A long run keeps the newest 5000 samples per chart.
    if (c.points.length > 5000) { c.points.splice(0, c.points.length - 5000); }
    if (d.baseline) { c.band = d.baseline; }
    latest = Math.max(latest, d.elapsed_ms);
    draw(d.probe);
  });
  // Guardrails and stop conditions: one row each, its current state.
  on("check", function (d) {
    var tr = row("checks", d.kind + "/" + d.name, [d.kind === "guardrail" ? "guardrail" : "stop condition",
      d.name, d.state, d.detail, d.at_unix_ms ? new Date(d.at_unix_ms).toISOString() : ""]);
    tr.setAttribute("data-check", d.kind + "/" + d.name);
    tr.setAttribute("data-state", d.state);
  });
  on("log", function (d) { log(secs(d.elapsed_ms) + " " + d.message); });
  on("finished", function (d) {
    document.getElementById("outcome").textContent = d.outcome;
    document.getElementById("reason").textContent = d.reason;
    var abort = document.getElementById("abort");
    if (abort) { abort.disabled = true; }
    status.textContent = "ended";
    es.close();
  });
})();
