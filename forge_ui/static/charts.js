// Telemetry charts on an agent's page: uPlot (vendored) fed by /ws/stats, which sends the
// same JSON as GET /api/stats — at once, on every change of the agent's rows, and every
// 30 s. The container holds data-agent and data-ws; the window buttons reconnect.
"use strict";
const hiveCharts = (() => {
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const palette = ["#58a6ff", "#d29922", "#3fb950", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#8b949e"];
  const classes = ["peer", "operator", "manager", "system"];
  // Each panel: title, its series (name in the payload → label), and a value format.
  const panels = [
    { id: "turns", unit: "turns/min", title: "Turns per minute", series: [["turns_per_minute", "turns/min"]] },
    { id: "exits", unit: "turns", title: "Turn exits per bucket", bars: true,
      series: [["exit.ok", "ok"], ["exit.compact-retry", "compact-retry"], ["exit.failure", "failure"]],
      colours: ["--ok", "--warn", "--bad"] },
    { id: "duration", unit: "seconds", title: "Turn duration (s)", series: [["duration.p50", "p50"], ["duration.p95", "p95"]] },
    { id: "tool_calls", unit: "calls", title: "Tool calls per turn", series: [["tool_calls_per_turn", "tool calls"]] },
    { id: "sent", unit: "messages", title: "Messages sent per turn", series: classes.map((c) => [`sent_per_turn.${c}`, c]) },
    { id: "received", unit: "messages", title: "Messages received per turn",
      series: classes.map((c) => [`received_per_turn.${c}`, c]) },
    { id: "inbox", unit: "messages", title: "Inbox depth (max per bucket)", series: [["inbox_depth", "depth"]] },
    { id: "idle", unit: "minutes", title: "Minutes since the last turn", series: [["since_last_turn", "minutes"]],
      scale: 1 / 60 },
    { id: "tools", unit: "calls", title: "Tool calls per bucket, by tool", prefix: "tool.", series: [] },
    { id: "denials", unit: "denials", title: "Permission denials per bucket, by tool", prefix: "denial.", series: [] },
    { id: "notes", unit: "bytes", title: "Notes size (bytes)", series: [["notes_bytes", "bytes"]] },
    { id: "cost", unit: "USD", title: "Cost per bucket (USD)", series: [["cost_usd", "USD"]] },
  ];
  const plots = {};
  let socket = null;
  let last = null;

  const fmt = (v, digits = 1) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));
  const ago = (s) => {
    if (s === null || s === undefined) return "never";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= size) return `${Math.floor(s / size)}${unit} ago`;
    }
    return `${Math.floor(s)}s ago`;
  };

  // A value between two gaps draws no line: uPlot's points filter shows it as a dot.
  function isolated(u, seriesIdx) {
    const d = u.data[seriesIdx], out = [];
    for (let i = 0; i < d.length; i++) {
      if (d[i] != null && d[i - 1] == null && d[i + 1] == null) out.push(i);
    }
    return out;
  }

  function summary(el, data) {
    const s = data.summary;
    const byCount = (counts) => Object.entries(counts || {}).sort((a, b) => b[1] - a[1])
      .map(([name, n]) => `${name} ${n}`).join(", ") || "-";
    const tools = byCount(s.tool);
    const items = [
      ["turns", fmt(s.turns, 0)], ["last turn", ago(s.since_last_turn)],
      ["inbox now", fmt(s.inbox_depth, 0)], ["inbox max", fmt(s.inbox_depth_max, 0)],
      ["duration p50", `${fmt(s["duration.p50"])} s`], ["p95", `${fmt(s["duration.p95"])} s`],
      ["tool calls/turn", fmt(s.tool_calls_per_turn)], ["failures", fmt(s.exit && s.exit.failure, 0)],
      ["notes", `${fmt(s.notes_bytes, 0)} B`], ["cost", `$${fmt(s.cost_usd, 2)}`], ["tools", tools],
      ["denied", `${fmt(s.denials, 0)}${s.denials ? ` (${byCount(s.denial)})` : ""}`],
    ];
    el.replaceChildren(...items.map(([label, value]) => {
      const span = document.createElement("span");
      span.append(`${label} `);
      const b = document.createElement("b");
      b.textContent = value;
      span.append(b);
      return span;
    }));
  }

  function seriesOf(panel, data) {
    if (!panel.prefix) return panel.series;
    return Object.keys(data.series).filter((k) => k.startsWith(panel.prefix)).sort()
      .map((k) => [k, k.slice(panel.prefix.length)]);
  }

  // Compact y-axis numbers (1.5k, 2M), so a bytes or a cost axis fits its width.
  const compact = (v) => {
    const a = Math.abs(v);
    if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
    if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
    return `${+v.toFixed(a && a < 1 ? 2 : 1)}`;
  };

  function options(panel, names, width) {
    const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 },
                   ticks: { stroke: css("--line"), width: 1 } };
    return {
      width, height: 170,
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min ?? 0), max > 0 ? max : 1] } },
      axes: [axis, { ...axis, size: 52, label: panel.unit || "", labelSize: 14,
                     values: (u, splits) => splits.map(compact) }],
      legend: { live: true, markers: { width: 2 } },
      series: [{}, ...names.map(([, label], i) => ({
        label,
        stroke: panel.colours ? css(panel.colours[i]) : palette[i % palette.length],
        width: 1.5,
        paths: panel.bars ? uPlot.paths.bars({ size: [0.8, 20] }) : undefined,
        points: { show: true, size: 5, filter: isolated },
        value: (u, v) => fmt(v, 2),
      }))],
    };
  }

  // Whether any series of the panel has something in the window: a value other than none
  // or zero (a count of nothing, an empty inbox all along, is no data to plot).
  const hasData = (data, names) =>
    names.some(([n]) => (data.series[n] || []).some((v) => v != null && v !== 0));

  function draw(root, data) {
    last = data;
    summary(root.querySelector(".chart-summary"), data);
    // Panels with nothing to plot fold away; with none to plot, one line says so.
    const empty = [];
    for (const panel of panels) {
      const none = !hasData(data, seriesOf(panel, data));
      root.querySelector(`[data-panel="${panel.id}"]`).hidden = none;
      if (none) empty.push(panel.title.toLowerCase());
    }
    const note = root.querySelector(".no-data");
    const all = empty.length === panels.length;
    root.querySelector(".charts").hidden = all;
    note.textContent = all ? "no data in this window"
      : empty.length ? `no data in this window: ${empty.join(", ")}` : "";
    note.hidden = !empty.length;
    for (const panel of panels) {
      const names = seriesOf(panel, data);
      const box = root.querySelector(`[data-panel="${panel.id}"]`);
      if (box.hidden) {
        if (plots[panel.id]) { plots[panel.id].destroy(); delete plots[panel.id]; }
        box.querySelector(".plot").replaceChildren();
        continue;
      }
      const key = names.map(([n]) => n).join(",");
      const columns = [data.t, ...names.map(([n]) => (data.series[n] || data.t.map(() => null))
        .map((v) => (v === null || panel.scale === undefined ? v : v * panel.scale)))];
      const plot = plots[panel.id];
      if (plot && plot.key === key) {
        plot.setData(columns);
        continue;
      }
      if (plot) plot.destroy();
      box.querySelector(".plot").replaceChildren();
      if (!names.length) {
        box.querySelector(".plot").textContent = "no data in this window";
        delete plots[panel.id];
        continue;
      }
      const width = box.clientWidth || 420;
      plots[panel.id] = new uPlot(options(panel, names, width), columns, box.querySelector(".plot"));
      plots[panel.id].key = key;
    }
  }

  function build(root) {
    const grid = root.querySelector(".charts");
    const note = document.createElement("p");
    note.className = "no-data empty";
    note.hidden = true;
    grid.before(note);
    for (const panel of panels) {
      const box = document.createElement("div");
      box.className = "chart";
      box.dataset.panel = panel.id;
      const h = document.createElement("h3");
      h.textContent = panel.title;
      const plot = document.createElement("div");
      plot.className = "plot";
      box.append(h, plot);
      grid.append(box);
    }
  }

  let generation = 0;
  function connect(root, windowSeconds) {
    if (socket) { socket.finished = true; socket.close(1000); }
    const mine = ++generation;
    const q = new URLSearchParams({ agent: root.dataset.agent, window: windowSeconds });
    socket = hive.live(`${root.dataset.ws}?${q}`, (data, ws) => {
      if (mine !== generation) { ws.finished = true; ws.close(1000); return; } // an old window's
      draw(root, data);
    }, root.querySelector(".live-dot"));
  }

  function start(root) {
    build(root);
    const buttons = root.querySelectorAll("[data-window]");
    for (const b of buttons) {
      b.addEventListener("click", () => {
        for (const other of buttons) other.classList.toggle("on", other === b);
        connect(root, b.dataset.window);
      });
    }
    const chosen = root.querySelector("[data-window].on") || buttons[0];
    connect(root, chosen ? chosen.dataset.window : 86400);
    window.addEventListener("resize", () => {
      for (const [id, plot] of Object.entries(plots)) {
        const box = root.querySelector(`[data-panel="${id}"]`);
        plot.setSize({ width: box.clientWidth, height: 170 });
      }
    });
  }

  return { start, plots, last: () => last };
})();
