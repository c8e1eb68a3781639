"""Files the project ships beside the package (hooks/, nix/, prompts/), and how to run
this hyperhive again.

They live at the top of the source tree, as DESIGN.md lays it out; the package is
installed editable (`pip install -e .`), so they are found relative to it.
"""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOKS_DIR = ROOT / "hooks"
NIX_DIR = ROOT / "nix"
PROMPTS_DIR = ROOT / "prompts"


def hyperhive_command() -> list[str]:
    """How to run this hyperhive: the console script beside this interpreter (a venv),
    else `hyperhive` on PATH (a container), else `python -m hyperhive`."""
    beside = Path(sys.executable).parent / "hyperhive"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("hyperhive")
    return [found] if found else [sys.executable, "-m", "hyperhive"]
