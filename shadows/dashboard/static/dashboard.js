// The dashboard's live side: one EventSource per page, fed by the server's single poller.
// Everything that comes from Redis is written with textContent, never as HTML.
(() => {
  "use strict";
  const body = document.body;
  const root = body.dataset.root;
  const page = body.dataset.page;
  const $ = (id) => document.getElementById(id);

  document.addEventListener("submit", (event) => {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  const span = (seconds) => {
    if (seconds == null) return "-";
    seconds = Math.max(seconds, 0);
    if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
    if (seconds < 60) return `${seconds.toFixed(1)}s`;
    const whole = Math.floor(seconds);
    const pad = (n) => String(n).padStart(2, "0");
    if (whole < 3600) return `${Math.floor(whole / 60)}m ${pad(whole % 60)}s`;
    if (whole < 86400) return `${Math.floor(whole / 3600)}h ${pad(Math.floor((whole % 3600) / 60))}m`;
    return `${Math.floor(whole / 86400)}d ${Math.floor((whole % 86400) / 3600)}h`;
  };
  const number = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n));

  const cell = (row, text, className) => {
    const td = row.insertCell();
    if (text instanceof Node) td.appendChild(text);
    else td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  };
  const taskLink = (key) => {
    const a = document.createElement("a");
    a.href = `${root}/task?key=${encodeURIComponent(key)}`;
    a.className = "key";
    a.textContent = key;
    return a;
  };
  // Mirrors the progress_bar macro: filled once tasks report progress (issue 13).
  const progressCell = (progress) => {
    const holder = document.createElement("span");
    if (progress && progress.total) {
      const bar = document.createElement("progress");
      bar.max = progress.total;
      bar.value = progress.current;
      holder.appendChild(bar);
    }
    const text = document.createElement("span");
    text.className = "muted";
    text.textContent = progress
      ? `${progress.current}${progress.total ? "/" + progress.total : ""} ${progress.message || ""}`
      : "–";
    holder.appendChild(text);
    return holder;
  };
  const refill = (table, rows, columns, fill) => {
    const tbody = table.tBodies[0];
    tbody.replaceChildren();
    if (!rows.length) {
      const row = tbody.insertRow();
      row.className = "empty";
      const td = cell(row, table.dataset.empty || "Nothing.");
      td.colSpan = columns;
      return;
    }
    for (const item of rows) fill(tbody.insertRow(), item);
  };

  // -- charts -----------------------------------------------------------------------
  const SERIES = {
    depth: [["ready", "Ready", "#2f6fd6"], ["scheduled", "Scheduled", "#8a63d2"], ["running", "Running", "#1f9d55"]],
    throughput: [["started", "Started/s", "#2f6fd6"], ["succeeded", "Succeeded/s", "#1f9d55"], ["failed", "Failed/s", "#d64545"]],
    lateness: [["lateness", "Lateness (s)", "#c77c02"]],
  };
  let fields = [];
  let span_s = 3600;
  const charts = {};
  const columns = (points, name) => {
    const at = fields.indexOf(name);
    return points.map((p) => p[at]);
  };
  const makeCharts = (history) => {
    fields = history.fields;
    span_s = history.span;
    for (const [name, series] of Object.entries(SERIES)) {
      const holder = $(`chart-${name}`);
      if (!holder) continue;
      holder.replaceChildren();
      const data = [columns(history.points, "t"), ...series.map(([f]) => columns(history.points, f))];
      const options = {
        width: Math.max(holder.clientWidth, 280),
        height: 180,
        scales: { x: { time: true } },
        series: [{}, ...series.map(([, label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false }))],
        axes: [{}, { size: 55 }],
        legend: { live: false },
      };
      charts[name] = { plot: new uPlot(options, data, holder), data, series };
    }
  };
  const extendCharts = (point) => {
    if (!point || !fields.length) return;
    for (const chart of Object.values(charts)) {
      const t = point[0];
      const data = chart.data;
      if (data[0].length && data[0][data[0].length - 1] >= t) continue;
      data[0].push(t);
      chart.series.forEach(([f], i) => data[i + 1].push(point[fields.indexOf(f)]));
      while (data[0].length && data[0][0] < t - span_s) data.forEach((column) => column.shift());
      chart.plot.setData(data);
    }
  };
  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      const holder = $(`chart-${name}`);
      chart.plot.setSize({ width: Math.max(holder.clientWidth, 280), height: 180 });
    }
  });

  // -- pages ------------------------------------------------------------------------
  const overview = (tick) => {
    for (const [name, value] of Object.entries(tick.gauges)) {
      const gauge = $(`gauge-${name}`);
      if (gauge) gauge.textContent = number(value);
    }
    extendCharts(tick.point);
    const table = $("tasks");
    table.dataset.empty = "No task seen yet.";
    refill(table, tick.tasks.rows, 8, (row, task) => {
      const a = document.createElement("a");
      a.href = `${root}/scheduled?task=${encodeURIComponent(task.name)}`;
      a.textContent = task.name;
      cell(row, a);
      for (const f of ["running", "started", "succeeded", "retried", "failed", "stricken", "workers"]) {
        cell(row, number(task[f]), "n");
      }
    });
  };
  // The page's cancel form (only for a logged-in operator), for one running task.
  const cancelForm = (key) => {
    const template = $("cancel-running");
    if (!template) return "";
    const form = template.content.firstElementChild.cloneNode(true);
    form.querySelector('input[name="key"]').value = key;
    form.dataset.confirm = `Cancel running task ${key}?`;
    return form;
  };
  const running = (tick) => {
    $("running-count").textContent = number(tick.gauges.running);
    $("running-more").hidden = tick.gauges.running <= tick.running.length;
    const table = $("running");
    table.dataset.empty = "Nothing is running.";
    refill(table, tick.running, 7, (row, task) => {
      row.dataset.key = task.key;
      cell(row, task.function);
      cell(row, taskLink(task.key));
      cell(row, task.worker);
      cell(row, span(task.age), "n");
      cell(row, task.attempt, "n");
      cell(row, progressCell(task.progress), "progress");
      cell(row, cancelForm(task.key), "actions");
    });
  };
  const workers = (tick) => {
    $("workers-count").textContent = number(tick.workers.length);
    const table = $("workers");
    table.dataset.empty = "No live worker.";
    refill(table, tick.workers, 7, (row, worker) => {
      row.dataset.name = worker.name;
      cell(row, worker.name);
      cell(row, worker.host || "–");
      cell(row, worker.concurrency, "n");
      cell(row, worker.running, "n");
      cell(row, `${span(worker.heartbeat_age)} ago`, "n");
      cell(row, worker.tasks.join(", "), "tasks");
      const now = document.createElement("span");
      worker.now.forEach((task, i) => {
        if (i) now.append(", ");
        now.append(taskLink(task.key), " ");
        const name = document.createElement("span");
        name.className = "muted";
        name.textContent = task.function;
        now.append(name);
      });
      cell(row, now);
    });
  };
  const views = { overview, running, workers };

  let ticks = 0;
  const source = new EventSource(`${root}/events`);
  source.addEventListener("history", (event) => {
    const history = JSON.parse(event.data);
    if (page === "overview") makeCharts(history);
  });
  source.addEventListener("tick", (event) => {
    const tick = JSON.parse(event.data);
    const banner = $("live-error");
    banner.hidden = !tick.error;
    banner.textContent = tick.error || "";
    if (!tick.error && views[page]) views[page](tick);
    body.dataset.ticks = String(++ticks);
  });
  source.addEventListener("error", () => {
    const banner = $("live-error");
    banner.hidden = false;
    banner.textContent = "Lost the connection to the dashboard; reconnecting…";
  });
})();
