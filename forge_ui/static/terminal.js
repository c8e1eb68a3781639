// The agent page's terminal: xterm.js over /ws/terminal/<name> (the protocol is in
// forge_ui/views/terminal.py). Each output frame is acknowledged once xterm.js has drawn it:
// the server never has more than its window unacknowledged, so a flood cannot pile up here.
"use strict";
(() => {
  const panel = document.getElementById("terminal-panel");
  if (!panel) return;
  const box = panel.querySelector(".terminal");
  const status = panel.querySelector(".terminal-status");
  const openButton = panel.querySelector(".terminal-open");
  const closeButton = panel.querySelector(".terminal-close");
  const path = panel.dataset.ws.replace(/^wss?:\/\/[^/]+/, ""); // url_for() made it absolute
  const encoder = new TextEncoder();
  let term = null;
  let fit = null;
  let ws = null;

  const say = (text, cls) => {
    status.textContent = text;
    status.className = `terminal-status ${cls || "muted"}`;
  };
  const send = (data) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(data); };
  // Input in pieces: the server closes the socket on a message over 1 MiB (a big paste).
  const INPUT_PIECE = 64 * 1024;
  const sendInput = (bytes) => {
    for (let i = 0; i < bytes.length; i += INPUT_PIECE) send(bytes.subarray(i, i + INPUT_PIECE));
  };
  const sendSize = () => send(JSON.stringify({ resize: [term.rows, term.cols] }));

  function create() {
    term = new Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontSize: 14,
      fontFamily: getComputedStyle(document.body).getPropertyValue("--mono") || "monospace",
      theme: { background: "#0a0d10" },
    });
    fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    box.hidden = false;
    term.open(box);
    term.onData((d) => sendInput(encoder.encode(d)));
    term.onBinary((d) => sendInput(Uint8Array.from(d, (c) => c.charCodeAt(0))));
    term.onResize(sendSize);
    // The box follows the window (terminal.css): refit whenever it changes size.
    new ResizeObserver(() => fit.fit()).observe(box);
    window.hiveTerminal = term; // for the browser tests and the console
  }

  function connect() {
    if (!term) create();
    term.reset();
    fit.fit();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const sock = new WebSocket(`${scheme}://${location.host}${path}`);
    sock.binaryType = "arraybuffer";
    ws = sock;
    let exit = null;
    say("connecting…");
    openButton.disabled = true;
    sock.onopen = () => {
      sock.opened = true;
      say("connected", "on");
      closeButton.disabled = false;
      sendSize();
      term.focus();
    };
    sock.onmessage = (e) => {
      if (typeof e.data !== "string") {
        const data = new Uint8Array(e.data);
        // Only this socket's own output is acknowledged to it (not a previous one's).
        term.write(data, () => { if (ws === sock) send(JSON.stringify({ ack: data.length })); });
        return;
      }
      const msg = JSON.parse(e.data);
      if (msg.error) term.write(`\r\n\x1b[31m${msg.error}\x1b[0m\r\n`);
      if (msg.exit !== undefined) exit = msg.exit;
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      openButton.disabled = false;
      openButton.textContent = "Open a new terminal";
      closeButton.disabled = true;
      if (exit !== null) say(`the shell exited (status ${exit})`);
      else if (!sock.opened) say("refused: log in again, or the agent has no shell", "off");
      else say(`closed${e.reason ? `: ${e.reason}` : ""}`, "off");
    };
  }

  openButton.addEventListener("click", connect);
  closeButton.addEventListener("click", () => { if (ws) ws.close(1000, "closed by the operator"); });
})();
