// hyperhive forge: review comments (templates/review/_comments.html). Each thread goes
// beside its line (or its file's header) in the diff when the diff on the page shows that
// line of that commit; the others stay in the list under it. A click on a line number opens
// a comment form for that line; a file's "comment" button one for the whole file.
// The review page's live handler calls hiveComments.live(msg).
"use strict";
(() => {
  const box = document.getElementById("comments");
  if (!box || window.hiveComments) return;
  // The review page's live updates carry the conversation's newest record: a new comment
  // or reply (the manager's, another operator's) shows a notice, never a reload that
  // would lose a comment being written.
  window.hiveComments = {
    live: (msg) => {
      if (msg.comments === undefined || (msg.comments || "") === box.dataset.tip) return;
      document.getElementById("comments-changed").hidden = false;
    },
  };
  document.getElementById("comments-reload").addEventListener("click", (e) => {
    e.preventDefault();
    location.reload();
  });
  const commits = { old: box.dataset.old, new: box.dataset.new };
  const template = document.getElementById("comment-form-template");

  const sectionOf = (path) => {
    for (const s of document.querySelectorAll(".diff .file")) if (s.dataset.path === path) return s;
    return null;
  };
  // The number cells of a diff row: [old, new] (a side without one is null).
  const numbers = (tr) => {
    if (tr.classList.contains("hunk") || tr.classList.contains("comment-row")) return null;
    const table = tr.closest("table.diff-table");
    const cells = tr.children;
    if (!table || cells.length < 4) return null;
    const [o, n] = table.classList.contains("split") ? [cells[0], cells[2]] : [cells[0], cells[1]];
    return [o.textContent.trim() || null, n.textContent.trim() || null];
  };
  const rowOf = (section, side, line) => {
    for (const tr of section.querySelectorAll("table.diff-table tr")) {
      const nums = numbers(tr);
      if (nums && nums[side === "old" ? 0 : 1] === String(line)) return tr;
    }
    return null;
  };
  // A row under `tr` that holds comment things: after the ones already there.
  const rowBelow = (tr, cls) => {
    let at = tr;
    while (at.nextElementSibling && at.nextElementSibling.classList.contains("comment-row")) {
      at = at.nextElementSibling;
    }
    const row = document.createElement("tr");
    row.className = `comment-row ${cls}`;
    const cell = document.createElement("td");
    cell.colSpan = tr.children.length;
    row.append(cell);
    at.after(row);
    return cell;
  };
  const blockBelow = (section, cls) => {
    const header = section.querySelector(".file-header");
    let at = header;
    while (at.nextElementSibling && at.nextElementSibling.classList.contains("file-comments")) {
      at = at.nextElementSibling;
    }
    const div = document.createElement("div");
    div.className = `file-comments ${cls}`;
    at.after(div);
    return div;
  };

  // Threads beside what they are about.
  for (const thread of box.querySelectorAll(".thread[data-path]")) {
    const { path, side, line, commit } = thread.dataset;
    if (commits[side] !== commit) continue; // about a commit this diff does not show
    const section = sectionOf(path);
    if (!section) continue;
    if (line) {
      const tr = rowOf(section, side, line);
      if (!tr) continue;
      rowBelow(tr, "thread-row").append(thread);
    } else {
      blockBelow(section, "thread-row").append(thread);
    }
    thread.classList.add("inline");
  }

  if (!template) return; // read-only (a pruned approval)

  const openForm = (place, fields) => {
    const form = template.content.firstElementChild.cloneNode(true);
    for (const [k, v] of Object.entries(fields)) form.elements[k].value = v;
    form.dataset.key = `${fields.path}|${fields.side}|${fields.line}`;
    form.querySelector(".cancel").addEventListener("click", () => {
      const holder = form.closest(".comment-row, .file-comments");
      (holder || form).remove();
    });
    place.append(form);
    form.elements.text.focus();
    return form;
  };
  const already = (key) => {
    for (const f of document.querySelectorAll("form.comment-form")) {
      if (f.dataset.key === key) return f;
    }
    return null;
  };

  document.addEventListener("click", (e) => {
    const td = e.target.closest && e.target.closest("table.diff-table td.num");
    if (!td || !td.textContent.trim()) return;
    const tr = td.parentElement;
    const section = tr.closest(".file");
    const nums = numbers(tr);
    if (!section || !nums) return;
    const table = tr.closest("table.diff-table");
    const index = Array.prototype.indexOf.call(tr.children, td);
    const side = index === 0 ? "old" : "new";
    if (table.classList.contains("split") ? index !== 0 && index !== 2 : index > 1) return;
    const line = nums[side === "old" ? 0 : 1];
    if (!line || !commits[side]) return;
    const fields = { path: section.dataset.path, side, line, commit: commits[side] };
    const open = already(`${fields.path}|${side}|${line}`);
    if (open) { open.elements.text.focus(); return; }
    openForm(rowBelow(tr, "form-row"), fields);
  });

  // A "comment" button on each file's header: a comment on the whole file.
  for (const section of document.querySelectorAll(".diff .file")) {
    const header = section.querySelector(".file-header");
    if (!header) continue;
    const deleted = header.querySelector(".fstat-deleted") !== null;
    const side = deleted ? "old" : "new";
    if (!commits[side]) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link file-comment";
    button.textContent = "comment";
    button.title = "comment on this file";
    button.addEventListener("click", () => {
      const fields = { path: section.dataset.path, side, line: "", commit: commits[side] };
      const open = already(`${fields.path}|${side}|`);
      if (open) { open.elements.text.focus(); return; }
      openForm(blockBelow(section, "form-row"), fields);
    });
    header.append(" ", button);
  }

  // Ctrl+Enter (or Cmd+Enter) saves the comment being written.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    const form = e.target.closest && e.target.closest("form.comment-form");
    if (!form || !form.reportValidity()) return;
    e.preventDefault();
    form.requestSubmit();
  });
})();
