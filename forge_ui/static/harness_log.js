// The agent page's harness log: the tail the page came with, then what the log gains,
// over /ws/harness/NAME (forge_ui/views/live.py), scrolled along while at the bottom.
"use strict";
(() => {
  const logEl = document.getElementById("harness-log");
  if (!logEl) return;
  const MAX_CHARS = 2_000_000; // older text is dropped from the page, not from the log
  let offset = Number(logEl.dataset.offset); // bytes of the log shown: where a reconnect goes on
  logEl.scrollTop = logEl.scrollHeight;
  hive.live(() => `${logEl.dataset.ws}?offset=${offset}`, (msg) => {
    const atEnd = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 4;
    if (msg.reset) logEl.textContent = "";
    if (msg.text) {
      logEl.append(msg.text);
      const empty = document.getElementById("harness-log-empty");
      if (empty) empty.remove();
    }
    offset = msg.offset;
    if (logEl.textContent.length > MAX_CHARS) {
      logEl.textContent = logEl.textContent.slice(-MAX_CHARS / 2);
    }
    if (atEnd) logEl.scrollTop = logEl.scrollHeight;
  }, document.getElementById("harness-live"));
})();
