// hyperhive forge: what a diff page does beyond the diff (the _diff.html partial loads
// it): expand unchanged context between hunks, viewed-file marks (saved per operator),
// n/p next/previous hunk, v viewed, ? key help, Ctrl+Enter submits the text box's form.
// No inline handlers: the forge's CSP runs only its own files and nonce'd scripts.
"use strict";
(() => {
  if (window.hiveDiffTree) return; // included twice: bind once
  window.hiveDiffTree = true;
  const STEP = 20; // lines per ↑/↓, as GitHub
  const MAX = 1000; // lines per request (gitstore.blobparts.MAX_LINES)
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const typing = (t) => t && (t.isContentEditable || (t.closest && t.closest("input, textarea, select")));

  // -- expand context -------------------------------------------------------------------
  const setLabel = (row) => {
    const n = Number(row.dataset.end) - Number(row.dataset.start) + 1;
    const all = row.querySelector(".expand-all");
    all.textContent = n > MAX ? `show ${MAX} more of ${n} unchanged lines`
      : `show ${n} unchanged line${n === 1 ? "" : "s"}`;
  };

  const expand = async (button) => {
    const row = button.closest("tr.expand");
    const file = button.closest("section.file");
    if (!row || !file || row.dataset.busy) return;
    const start = Number(row.dataset.start), end = Number(row.dataset.end);
    const old = Number(row.dataset.old);
    let from = start, to = Math.min(end, start + STEP - 1), below = true;
    if (button.classList.contains("expand-all")) to = Math.min(end, start + MAX - 1);
    else if (button.classList.contains("expand-up")) {
      to = end; from = Math.max(start, end - STEP + 1); below = false;
    }
    const split = !!button.closest("table.split");
    const u = new URL(file.dataset.linesUrl, location.href);
    u.search = new URLSearchParams({
      start: from, end: to, old: old + (from - start), path: file.dataset.path,
      view: split ? "split" : "unified",
    }).toString();
    row.dataset.busy = "1";
    try {
      const r = await fetch(u, { credentials: "same-origin" });
      if (!r.ok) throw new Error(`${r.status} ${(await r.text()).slice(0, 200)}`);
      const holder = document.createElement("tbody");
      holder.innerHTML = await r.text(); // the forge's own escaped, highlighted rows
      const rows = Array.from(holder.children);
      if (below) row.before(...rows); else row.after(...rows);
      if (below) { row.dataset.start = to + 1; row.dataset.old = old + (to + 1 - start); }
      else row.dataset.end = from - 1;
      if (Number(row.dataset.start) > Number(row.dataset.end)) row.remove();
      else setLabel(row);
    } catch (err) {
      row.querySelector("td").append(` (could not load: ${err.message})`);
    } finally {
      delete row.dataset.busy;
    }
  };
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("tr.expand button");
    if (b) { e.preventDefault(); expand(b); }
  });

  // -- viewed marks ---------------------------------------------------------------------
  const tree = () => document.querySelector(".file-tree");
  const countViewed = () => {
    const t = tree();
    const out = t && t.querySelector(".tree-viewed");
    if (!out) return;
    const all = document.querySelectorAll("section.file").length;
    out.textContent = `${document.querySelectorAll("section.file.viewed").length} of ${all} viewed`;
  };
  const setViewed = async (file, on) => {
    const box = file.querySelector(".viewed-box");
    file.classList.toggle("viewed", on);
    if (box) box.checked = on;
    const li = document.querySelector(`.file-tree li[data-file="${file.id}"]`);
    if (li) li.classList.toggle("viewed", on);
    countViewed();
    const t = tree();
    if (!t || !t.dataset.viewedUrl) return;
    const r = await fetch(t.dataset.viewedUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ path: file.dataset.path, sides: file.dataset.sides, viewed: on }),
    });
    if (!r.ok) { // not saved: show it as it is
      file.classList.toggle("viewed", !on);
      if (box) box.checked = !on;
      if (li) li.classList.toggle("viewed", !on);
      countViewed();
    }
  };
  document.addEventListener("change", (e) => {
    const box = e.target;
    if (!box.classList || !box.classList.contains("viewed-box")) return;
    const file = box.closest("section.file");
    setViewed(file, box.checked);
    if (box.checked) file.scrollIntoView({ block: "nearest" });
  });

  // -- keys -----------------------------------------------------------------------------
  const shown = (el) => el.getClientRects().length > 0;
  const hunks = () => Array.from(document.querySelectorAll("section.file tr.hunk")).filter(shown);
  const goHunk = (step) => {
    const list = hunks();
    if (!list.length) return;
    let i = list.findIndex((h) => h.classList.contains("current-hunk"));
    const r = i >= 0 ? list[i].getBoundingClientRect() : null;
    if (r && r.bottom > 0 && r.top < window.innerHeight) {
      i = Math.max(0, Math.min(list.length - 1, i + step));
    } else { // from where the reader scrolled to
      const tops = list.map((h) => h.getBoundingClientRect().top);
      if (step > 0) { i = tops.findIndex((t) => t > 60); if (i < 0) i = list.length - 1; }
      else { i = 0; tops.forEach((t, k) => { if (t < 40) i = k; }); }
    }
    list.forEach((h) => h.classList.remove("current-hunk"));
    list[i].classList.add("current-hunk");
    list[i].scrollIntoView({ block: "start" });
  };
  const currentFile = () => {
    const marked = document.querySelector("section.file.current");
    if (marked) return marked;
    const hunk = document.querySelector("tr.current-hunk");
    return hunk ? hunk.closest("section.file") : null;
  };
  const help = () => document.getElementById("key-help");

  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.matches
        && e.target.matches("textarea") && e.target.form) {
      e.preventDefault();
      e.target.form.requestSubmit(); // runs the form's checks (a required reason)
      return;
    }
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const h = help();
    if (e.key === "Escape" && h && !h.hidden) { h.hidden = true; return; }
    if (e.key === "?") { if (h) h.hidden = !h.hidden; }
    else if (e.key === "n") goHunk(1);
    else if (e.key === "p") goHunk(-1);
    else if (e.key === "v") { const f = currentFile(); if (f) setViewed(f, !f.classList.contains("viewed")); }
    else return;
    e.preventDefault();
  });
})();
