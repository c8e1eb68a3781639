// hyperhive forge: pages that fit the window. Every table of a page scrolls sideways in
// its own box, which says so ("scroll sideways") while its table is wider than the box;
// below 800 px a side-by-side diff falls back to the unified view.
"use strict";
(() => {
  const NARROW = 800;
  const SKIP = ".table-scroll, .diff-scroll, .blob-view, .uplot";

  if (window.innerWidth < NARROW && document.querySelector(".diff.split")) {
    const u = new URL(location.href);
    u.searchParams.set("view", "unified");
    location.replace(u.toString()); // too narrow for two columns: the unified view
    return;
  }

  const boxes = new Set();
  const measure = () => {
    for (const box of boxes) {
      if (!box.isConnected) { boxes.delete(box); continue; }
      const over = box.scrollWidth > box.clientWidth + 1;
      box.classList.toggle("overflowing", over);
      box.classList.toggle("at-end", box.scrollLeft + box.clientWidth >= box.scrollWidth - 1);
    }
  };
  const wrap = () => {
    for (const table of document.querySelectorAll("main table")) {
      if (table.parentElement.closest(SKIP) || table.closest(SKIP) === table) continue;
      const box = document.createElement("div");
      box.className = "table-scroll";
      box.dataset.hint = "scroll sideways for more \u21c6";
      table.replaceWith(box);
      box.append(table);
      box.addEventListener("scroll", measure, { passive: true });
      boxes.add(box);
    }
    measure();
  };
  let queued = false;
  const later = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; wrap(); });
  };
  const start = () => {
    wrap();
    // Live updates replace parts of a page (the history, the dashboard's sections).
    new MutationObserver(later).observe(document.querySelector("main") || document.body,
      { childList: true, subtree: true });
    window.addEventListener("resize", later);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  window.hiveFit = { measure };
})();
