// hyperhive forge: small helpers shared by every page.
"use strict";
const hive = {
  csrf: () => document.querySelector('meta[name="csrf-token"]').content,
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
