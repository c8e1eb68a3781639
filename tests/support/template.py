"""The `home` fixture's hive, made once per test process and copied for each test.

`init_hive` costs ~45 ms of CPU and ~100 ms on a loaded machine, most of it a `nix flake
lock` process for the meta repo's first flake; over ~570 tests that is half a minute of
the suite. A copy of the files one `init_hive` wrote is the same hive:
- nothing in it names the directory it lives in (`own_path_in`, checked on every
  template, says so, or the template is refused);
- its permissions are those `init_hive` would give under the process's umask now: a
  template is made per umask (the CLI's `main()`, called in-process by some tests,
  restricts the worker's umask for the rest of its run);
- every file and directory of the copy is new, with the time of the copy (the read
  caches take a listing written just now as unsettled, as they would after `init_hive`).
What differs is the clock inside it: the first commits and proposal manager#1 carry the
template's time, a little before the test began; and `init_hive` ran with the
environment of the first test that wanted the template (no test's own PATH or nix)."""

import os
import shutil
from collections.abc import Callable
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


def current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


class Templates:
    """The template for the process's umask at the time, made at `place()` when first
    asked for."""

    def __init__(self, place: Callable[[], Path]):
        self.place = place
        self.made: dict[int, Home] = {}

    def current(self) -> Home:
        mask = current_umask()
        if mask not in self.made:
            self.made[mask] = make_template(self.place())
        return self.made[mask]


def copy_hive(template: Home, root: Path) -> Home:
    """A new hive at `root` with the template's files, symlinks and permissions; every
    file and directory created now (copytree would give directories the template's
    times)."""
    src = template.root
    made: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src):  # symlinks to directories: not followed
        here = Path(dirpath)
        dest = root / here.relative_to(src)
        dest.mkdir(parents=dest == root)
        made.append((here, dest))
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            if (here / name).is_symlink():
                os.symlink(os.readlink(here / name), dest / name)
            else:
                shutil.copy(here / name, dest / name)  # the bytes and the permissions
    for here, dest in reversed(made):  # after their contents: a read-only one stays so
        shutil.copymode(here, dest)
    return Home(root)
