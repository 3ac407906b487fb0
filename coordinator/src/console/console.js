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
  var phaseN = 0;
  on("started", function (d) { log(secs(d.elapsed_ms) + " started " + d.experiment); });
  on("phase", function (d) {
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
