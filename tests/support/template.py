"""The `home` fixture's hive, made once per test process and copied for each test.

`init_hive` costs ~45 ms of CPU and ~100 ms on a loaded machine, most of it a `nix flake
lock` process for the meta repo's first flake; over ~570 tests that is half a minute of
the suite. A copy of the files one `init_hive` wrote is the same hive: nothing in it
names the directory it lives in (`own_path_in`, checked on every template, says so or
the copy is refused), and the copied files get the time of the copy, as new ones would.
What differs is only the clock inside it: the first commits and proposal manager#1 carry
the template's time, a little before the test began."""

import shutil
from pathlib import Path

from hyperhive.agents import init_hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime


class TemplateNamesItsPath(AssertionError):
    pass


def own_path_in(root: Path) -> list[str]:
    """The files under `root` whose bytes name `root` (absolute or resolved)."""
    needles = {str(root).encode(), str(root.resolve()).encode()}
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and any(n in p.read_bytes() for n in needles)
    )


def make_template(root: Path, actor: str = "operator") -> Home:
    """A hive initialized at `root` for `copy_hive`; refused if a file names its path."""
    home = Home(root)
    init_hive(home, LocalRuntime(home), actor)
    if named := own_path_in(root):
        raise TemplateNamesItsPath(
            f"init_hive wrote its own path into {named}: a copy would point at the template"
        )
    return home


def copy_hive(template: Home, root: Path) -> Home:
    """A new hive at `root` with the template's files (symlinks kept as links, modes
    kept, modification times now)."""
    shutil.copytree(template.root, root, symlinks=True, copy_function=shutil.copy)
    return Home(root)
