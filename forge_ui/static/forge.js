// hyperhive forge: small helpers shared by every page.
"use strict";
const hive = {
  csrf: () => document.querySelector('meta[name="csrf-token"]').content,
  // filters.age: "5s", "3m", "2h", "4d" since `ts` (unix seconds).
  age(ts, now) {
    if (!ts) return "-";
    const s = Math.max(0, Math.floor(now - ts));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= size) return `${Math.floor(s / size)}${unit}`;
    }
    return `${s}s`;
  },
  // Bring every <time class="age" data-ts> below `root` (filters.live_age) up to now;
  // `skew`: the server's clock minus this one's, in seconds.
  ages(root, skew = 0) {
    const now = Date.now() / 1000 + skew;
    for (const el of root.querySelectorAll("time.age[data-ts]")) {
      el.textContent = hive.age(Number(el.dataset.ts), now);
    }
  },
  // A websocket to this site that reconnects with backoff; `onmessage` gets parsed JSON.
  // `path` may be a function, asked again at each reconnect (a log's offset moves on).
  live(path, onmessage, dot) {
    const where = () => (typeof path === "function" ? path() : path)
      .replace(/^wss?:\/\/[^/]+/, ""); // url_for() of a websocket route is absolute
    let delay = 500;
    const connect = () => {
      const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${where()}`);
      ws.onopen = () => { delay = 500; if (dot) dot.classList.add("on"); };
      ws.onmessage = (e) => onmessage(JSON.parse(e.data), ws);
      ws.onclose = (e) => {
        if (dot) dot.classList.remove("on");
        if (e.code === 1000 && ws.finished) return;
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
      return ws;
    };
    return connect();
  },
};
