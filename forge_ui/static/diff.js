// hyperhive forge: diff pages. j next file, k previous file; ?view= links keep the
// rest of the URL. (n/p, hunks, are difftree.js's.) Works on any page with `.file` sections (the _diff.html partial).
"use strict";
(() => {
  if (window.hiveDiff) return; // loaded twice: bind once
  window.hiveDiff = true;

  const files = () => Array.from(document.querySelectorAll(".file"));

  // The file being read: the marked one while it is on screen, else the last whose top
  // has scrolled past the top of the viewport.
  const currentIndex = (list) => {
    const marked = list.findIndex((f) => f.classList.contains("current"));
    if (marked >= 0) {
      const r = list[marked].getBoundingClientRect();
      if (r.bottom > 0 && r.top < window.innerHeight) return marked;
    }
    let at = -1;
    list.forEach((f, i) => { if (f.getBoundingClientRect().top <= 8) at = i; });
    return at;
  };

  const go = (step) => {
    const list = files();
    if (!list.length) return;
    const i = currentIndex(list);
    const next = Math.max(0, Math.min(list.length - 1, i < 0 && step < 0 ? 0 : i + step));
    list.forEach((f) => f.classList.remove("current"));
    const f = list[next];
    f.classList.add("current");
    f.scrollIntoView({ block: "start" });
    if (f.id) history.replaceState(null, "", `#${f.id}`);
  };

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || (t.closest && t.closest("input, textarea, select")))) return;
    if (e.key === "j") go(1);
    else if (e.key === "k") go(-1);
    else return;
    e.preventDefault();
  });

  // Links like <a href="?view=split">: the server renders the view; only the query's
  // `view` changes, other parameters and the #file anchor stay.
  const target = (view) => {
    const u = new URL(location.href);
    u.searchParams.set("view", view);
    return u.toString();
  };
  for (const a of document.querySelectorAll('a[href^="?view="]')) {
    a.dataset.view = new URLSearchParams(a.getAttribute("href").slice(1)).get("view");
    a.href = target(a.dataset.view);
  }
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[data-view]");
    if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    location.href = target(a.dataset.view); // now: the #anchor may have moved since load
  });
})();
