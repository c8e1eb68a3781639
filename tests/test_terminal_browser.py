"""The agent page's terminal in a real browser: headless Chromium (Playwright) against
`hyperhive up` as a real process, the session from the login page (support.browser's
fixtures, on the forge the sharing modules use: the manager stays undeployed there)."""

import re
from pathlib import Path

from support.browser import browser, daemon, session_state, shots, web  # noqa: F401
from support.procs import alive, host_pid
from support.wait import wait_for

SHARE_FORGE = True  # each test opens and ends its own shells; the hive keeps no trace
TIMEOUT_MS = 30_000


# The shell's pid and pid namespace (a sandbox's own), for host_pid.
SHELL_PID = 'echo "PID=$$ NS=$(readlink /proc/$$/ns/pid);"'
SHELL_PID_RE = r"^PID=(\d+) NS=(pid:\[\d+\]);$"


def shell_pid(m) -> tuple[int, str]:
    return int(m.group(1)), m.group(2)


def screen(page) -> str:
    """What the terminal shows, row by row (from xterm.js's buffer, as drawn)."""
    return page.evaluate(
        """() => {
          const b = window.hiveTerminal.buffer.active;
          const rows = [];
          for (let i = 0; i < b.length; i++) rows.push(b.getLine(i).translateToString(true));
          return rows.join("\\n");
        }"""
    )


def wait_screen(page, pattern: str) -> re.Match:
    found = {}

    def seen():
        found["m"] = re.search(pattern, screen(page), re.M)
        return found["m"]

    wait_for(seen, timeout=TIMEOUT_MS / 1000, what=f"{pattern!r} on the terminal")
    return found["m"]


def type_line(page, text: str) -> None:
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def stty_size(page, mark: str) -> tuple[int, int]:
    type_line(page, f'echo "{mark}=$(stty size);"')
    # The typed line shows `$(`, not digits; the `;` says the line is complete.
    m = wait_screen(page, rf"^{mark}=(\d+) (\d+);$")
    return int(m.group(1)), int(m.group(2))


def test_terminal_runs_commands_follows_resizes_and_hangs_up_on_close(web, daemon):
    page = web.open("/agents/manager")
    page.click("button:has-text('Open terminal')")
    page.wait_for_selector(".terminal-status.on")
    page.wait_for_selector(".xterm-helper-textarea")
    type_line(page, "echo $((6*7))")
    wait_screen(page, r"^42$")
    type_line(page, SHELL_PID)
    pid = host_pid(*shell_pid(wait_screen(page, SHELL_PID_RE)))
    assert alive(pid)
    # Colours and UTF-8 reach the screen: a red, accented word.
    type_line(page, r"printf '\033[31mcaf\303\251\033[0m\n'")
    wait_screen(page, r"^café$")
    red = page.evaluate(
        """() => {
          const b = window.hiveTerminal.buffer.active;
          for (let i = 0; i < b.length; i++) {
            const line = b.getLine(i);
            if (line.translateToString(true) === "café") return line.getCell(0).getFgColor();
          }
          return null;
        }"""
    )
    assert red == 1  # palette colour 1: red

    before = stty_size(page, "A")
    page.set_viewport_size({"width": 800, "height": 500})
    wait_for(
        lambda: (
            page.evaluate("[window.hiveTerminal.rows, window.hiveTerminal.cols]") != list(before)
        ),
        timeout=TIMEOUT_MS / 1000,
        what="the terminal to refit",
    )
    after = stty_size(page, "B")
    assert after != before
    assert list(after) == page.evaluate("[window.hiveTerminal.rows, window.hiveTerminal.cols]")
    assert after[0] < before[0] and after[1] < before[1]

    page.close()
    wait_for(lambda: not alive(pid), what="the shell to end when its page closed")


def test_closing_the_terminal_then_opening_a_new_one(web, daemon, shots: Path):
    page = web.open("/agents/manager")
    page.click("button:has-text('Open terminal')")
    page.wait_for_selector(".terminal-status.on")
    type_line(page, SHELL_PID)
    first = host_pid(*shell_pid(wait_screen(page, SHELL_PID_RE)))
    page.click("button:has-text('Close')")
    page.wait_for_selector(".terminal-status:has-text('closed')")
    wait_for(lambda: not alive(first), what="the first shell to end")
    page.click("button:has-text('Open a new terminal')")
    page.wait_for_selector(".terminal-status.on")
    type_line(page, r"printf '\033[1;32mgreen\033[0m \342\224\200\342\224\200 ok\n'")
    wait_screen(page, r"^green ── ok$")
    type_line(page, "exit 3")
    page.wait_for_selector(".terminal-status:has-text('the shell exited (status 3)')")
    page.screenshot(path=str(shots / "terminal.png"))


def test_a_paste_over_the_message_limit_arrives_whole(web, daemon):
    """terminal.js sends input in pieces: a paste bigger than the server's message limit
    (forge_ui.views.live.MAX_MESSAGE) reaches the shell instead of closing the socket."""
    page = web.open("/agents/manager")
    page.click("button:has-text('Open terminal')")
    page.wait_for_selector(".terminal-status.on")
    # Non-canonical: the tty passes any length of line on; READY comes after bash has
    # ended its bracketed-paste mode, so the input below is not wrapped in markers.
    type_line(page, "stty -icanon -echo; echo READY; head -c 1500000 | wc -c; stty sane")
    wait_screen(page, r"^READY$")
    page.evaluate("window.hiveTerminal.input('x'.repeat(1500000))")
    wait_screen(page, r"^1500000$")
    assert page.is_visible(".terminal-status.on")
