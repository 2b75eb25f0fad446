// fastq dashboard: confirm dialogs for destructive forms, and the live throughput chart of the
// queues page (samples /api/queues; rates are differences of Asynq's all-time counters).
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  var chart = document.getElementById("throughput");
  if (!chart) {
    return;
  }
  var refresh = Math.max(0.2, parseFloat(document.body.getAttribute("data-refresh")) || 2) * 1000;
  var keep = 90;
  var samples = [];  // {t, processed, failed}
  var W = 720, H = 160;

  function fmt(n) {
    return n >= 100 ? Math.round(n).toLocaleString() : n.toFixed(1);
  }

  function draw() {
    var rates = [];
    for (var i = 1; i < samples.length; i++) {
      var dt = samples[i].t - samples[i - 1].t;
      if (dt <= 0) { continue; }
      rates.push({
        p: Math.max(0, (samples[i].processed - samples[i - 1].processed) / dt),
        f: Math.max(0, (samples[i].failed - samples[i - 1].failed) / dt)
      });
    }
    if (!rates.length) { return; }
    var top = 1;
    rates.forEach(function (r) { top = Math.max(top, r.p, r.f); });
    var step = W / Math.max(1, rates.length - 1);  // spread over the width until the window is full
    var x0 = rates.length === 1 ? W : 0;
    function points(key) {
      return rates.map(function (r, i) {
        return (x0 + i * step).toFixed(1) + "," + (H - 2 - (H - 20) * r[key] / top).toFixed(1);
      }).join(" ");
    }
    document.getElementById("line-processed").setAttribute("points", points("p"));
    document.getElementById("line-failed").setAttribute("points", points("f"));
    document.getElementById("chart-max").textContent = fmt(top) + " tasks/s at the top line";
    var last = rates[rates.length - 1];
    document.getElementById("rate-processed").textContent = fmt(last.p);
    document.getElementById("rate-failed").textContent = fmt(last.f);
    chart.setAttribute("data-samples", String(samples.length));
  }

  function update(data) {
    var processed = 0, failed = 0, totals = {};
    data.queues.forEach(function (q) {
      processed += q.processed_total;
      failed += q.failed_total;
      var row = document.querySelector('tr[data-queue="' + CSS.escape(q.queue) + '"]');
      Object.keys(q).forEach(function (key) {
        if (typeof q[key] === "number") { totals[key] = (totals[key] || 0) + q[key]; }
        if (!row) { return; }
        var cell = row.querySelector('[data-field="' + key + '"]');
        if (cell) { cell.textContent = q[key].toLocaleString("en-US"); }
      });
    });
    Object.keys(totals).forEach(function (key) {
      var cell = document.querySelector('[data-total="' + key + '"]');
      if (cell) { cell.textContent = totals[key].toLocaleString("en-US"); }
    });
    samples.push({t: data.time, processed: processed, failed: failed});
    if (samples.length > keep) { samples.shift(); }
    draw();
  }

  function poll() {
    fetch("/api/queues", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { update(data); } })
      .catch(function () { /* Redis or the dashboard is down: keep the last picture */ })
      .then(function () { window.setTimeout(poll, refresh); });
  }
  poll();
}());
