"""The wheel (what nix/package.nix installs) carries every file the forge serves."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_has_every_template_and_static_file(tmp_path):
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    src = tmp_path / "src"
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hyperhive-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        rel
        for rel in tracked
        if rel.startswith(("forge_ui/templates/", "forge_ui/static/")) and (ROOT / rel).is_file()
    }
    assert wanted, "no forge files found: the test would check nothing"
    assert wanted <= shipped, sorted(wanted - shipped)
