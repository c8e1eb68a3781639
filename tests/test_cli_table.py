"""The README's CLI table is generated from the argparse parser (scripts/cli_table.py):
this fails when they differ, and the generator shows every command with its arguments."""

import importlib.util
from pathlib import Path

from hyperhive.cli import build_parser

# scripts/ is not a package (development tools, not shipped): load the script by path.
_spec = importlib.util.spec_from_file_location(
    "cli_table", Path(__file__).parent.parent / "scripts" / "cli_table.py"
)
cli_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli_table)


def test_the_readme_table_is_the_parsers():
    readme = cli_table.README.read_text()
    assert cli_table.with_table(readme, cli_table.table(build_parser())) == readme, (
        "README.md's CLI table differs from hyperhive/cli.py: run scripts/cli_table.py"
    )
    assert cli_table.main(["--check"]) == 0


def test_a_changed_parser_is_a_stale_table():
    parser = build_parser()
    before = cli_table.table(parser)
    deploy = dict(cli_table.commands(parser))[("deploy",)]
    deploy.add_argument("--dry-run", action="store_true")
    deploy.description += "; `--dry-run` builds nothing"
    after = cli_table.table(parser)
    row = next(r for r in after.splitlines() if r.startswith("| `hyperhive deploy "))
    assert row == (
        "| `hyperhive deploy NAME#ID [--runtime {local,nixos-container}] [--here] [--dry-run]` | "
        "build an approved id (what the hook calls); queued on the daemon if one runs, `--here` "
        "builds in this process; `--dry-run` builds nothing |"
    )
    readme = cli_table.README.read_text()
    assert cli_table.with_table(readme, after) != readme
    assert cli_table.with_table(readme, before) == readme


def test_every_command_has_a_row():
    rows = cli_table.table(build_parser()).splitlines()[2:]
    words = [" ".join(w) for w, _ in cli_table.commands(build_parser())]
    assert len(rows) == len(words) >= 29
    for row, command in zip(rows, words, strict=True):
        assert row.startswith(f"| `hyperhive {command}")
        assert not row.endswith("|  |"), f"{command} has no description"
