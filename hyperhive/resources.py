"""Files the project ships beside the package (hooks/, nix/, prompts/).

They live at the top of the source tree, as DESIGN.md lays it out; the package is
installed editable (`pip install -e .`), so they are found relative to it.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOKS_DIR = ROOT / "hooks"
NIX_DIR = ROOT / "nix"
PROMPTS_DIR = ROOT / "prompts"
