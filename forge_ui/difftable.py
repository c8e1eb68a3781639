"""A file's diff table (unified or side by side) as HTML, built once per file and view.

These rows are most of a diff page: a 5,000-line change is 5,000 rows, which Jinja macros
took ~180 ms of CPU to write per request. Here a row is one f-string of pieces that are
escaped already (`Line.html` is Markup built from escaped tokens), and the table is kept
on its `FileDiff`, which `diffcache` keeps by the commits it compares: a page seen again
writes none of it. `_diff.html` calls `diff_table(f, view, expandable)`; the markup is the
one `_context_rows.html` adds to when context is expanded."""

from flask import Flask
from markupsafe import Markup, escape

from forge_ui.difftree import Gap, gaps
from forge_ui.diffview import FileDiff, Line

ROW_CLASS = {"context": "ctx", "add": "add", "del": "del"}
SIGN = {"context": " ", "add": "+", "del": "-"}
NOEOL = '<span class="noeol" title="No newline at end of file">&#x2205;</span>'


def _code(line: Line) -> str:
    return line.html + NOEOL if line.no_newline else str(line.html)


def _expander(g: Gap | None) -> str:
    if g is None:
        return ""
    s = "" if g.count == 1 else "s"
    return (
        f'<tbody class="gap"><tr class="expand" data-start="{g.start}" data-end="{g.end}" '
        f'data-old="{g.old_start}"><td class="head" colspan="4"><button type="button" '
        'class="expand-down" title="show the lines below">&darr; 20</button><button '
        f'type="button" class="expand-all">show {g.count} unchanged line{s}</button><button '
        'type="button" class="expand-up" title="show the lines above">&uarr; 20</button>'
        "</td></tr></tbody>"
    )


def _unified(f: FileDiff, gs: dict[int, Gap]) -> str:
    out = ['<div class="diff-scroll"><table class="diff-table unified hl">']
    for k, h in enumerate(f.hunks):
        out.append(f"\n{_expander(gs.get(k))}\n")
        out.append(
            '<tbody><tr class="hunk"><td class="num"></td><td class="num"></td>'
            f'<td class="head" colspan="2">{escape(h.header)}</td></tr>'
        )
        out.extend(
            f'\n<tr class="{ROW_CLASS[ln.kind]}"><td class="num">{ln.old_no or ""}</td>'
            f'<td class="num">{ln.new_no or ""}</td><td class="sign">{SIGN[ln.kind]}</td>'
            f'<td class="code">{_code(ln)}</td></tr>'
            for ln in h.lines
        )
        out.append("</tbody>")
    out.append(f"\n{_expander(gs.get(len(f.hunks)))}\n</table></div>")
    return "".join(out)


def _side(line: Line | None, side: str) -> str:
    if line is None:
        return '<td class="num none"></td><td class="code none"></td>'
    no = line.old_no if side == "del" else line.new_no
    return f'<td class="num {side}">{no}</td><td class="code {side}">{_code(line)}</td>'


def _split(f: FileDiff, gs: dict[int, Gap]) -> str:
    out = [
        '<div class="diff-scroll"><table class="diff-table split hl">\n'
        '<colgroup><col class="num"><col class="code"><col class="num"><col class="code">'
        "</colgroup>"
    ]
    for k, h in enumerate(f.hunks):
        out.append(f"\n{_expander(gs.get(k))}\n")
        out.append(
            '<tbody><tr class="hunk"><td class="num"></td>'
            f'<td class="head" colspan="3">{escape(h.header)}</td></tr>'
        )
        for r in h.rows:
            left, right = r.left, r.right
            if left is not None and left.kind == "context" and right is not None:
                out.append(
                    f'\n<tr class="ctx"><td class="num">{left.old_no}</td><td class="code">'
                    f'{_code(left)}</td><td class="num">{right.new_no}</td><td class="code">'
                    f"{_code(right)}</td></tr>"
                )
                continue
            cls = " ".join(c for c, ln in (("del", left), ("add", right)) if ln is not None)
            out.append(f'\n<tr class="{cls}">{_side(left, "del")}{_side(right, "add")}</tr>')
        out.append("</tbody>")
    out.append(f"\n{_expander(gs.get(len(f.hunks)))}\n</table></div>")
    return "".join(out)


def diff_table(f: FileDiff, view: str, expandable: bool) -> Markup:
    """The table of `f`'s hunks: side by side for view 'split', else unified; with
    `expandable`, the rows that load the unchanged lines between hunks. Kept on `f`."""
    key = ("split" if view == "split" else "unified", bool(expandable))
    html = f.tables.get(key)
    if html is None:
        gs = gaps(f) if expandable else {}
        html = Markup(_split(f, gs) if key[0] == "split" else _unified(f, gs))
        f.tables[key] = html
    return html


def init_app(app: Flask) -> None:
    app.jinja_env.globals["diff_table"] = diff_table
