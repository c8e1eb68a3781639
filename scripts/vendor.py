#!/usr/bin/env python3
"""The forge's front-end packages: pinned npm releases, vendored into
forge_ui/static/vendor/. A development tool: it is not in the shipped package.

`make vendor` (`scripts/vendor.py`) fetches each pinned tarball with `npm pack`,
checks it against the pinned integrity (sha512, as in the registry's metadata), copies
only the files the forge serves and each package's LICENSE, and writes MANIFEST.json
(versions, integrities, sha256 of every file). The vendored files are committed, so
serving the forge needs neither npm nor the network. `scripts/vendor.py --check`
(and the test suite) verifies the committed files against the manifest and the pins.

To upgrade: change a version and its integrity (`npm view PKG@VERSION dist.integrity`),
run `make vendor`, commit static/vendor/.
"""

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "forge_ui" / "static" / "vendor"
MANIFEST = VENDOR / "MANIFEST.json"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str
    dest: str  # its directory under static/vendor/
    files: dict[str, str]  # path in the tarball's package/ → name under dest


PACKAGES = (
    Package(
        "@xterm/xterm",
        "6.0.0",
        "sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==",
        "xterm",
        {"lib/xterm.js": "xterm.js", "css/xterm.css": "xterm.css", "LICENSE": "LICENSE"},
    ),
    Package(
        "@xterm/addon-fit",
        "0.11.0",
        "sha512-jYcgT6xtVYhnhgxh3QgYDnnNMYTcf8ElbxxFzX0IZo+vabQqSPAjC3c1wJrKB5E19VwQei89QCiZZP86DCPF7g==",
        "xterm-addon-fit",
        {"lib/addon-fit.js": "addon-fit.js", "LICENSE": "LICENSE"},
    ),
    Package(
        "uplot",
        "1.6.32",
        "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        "uplot",
        {
            "dist/uPlot.iife.min.js": "uPlot.iife.min.js",
            "dist/uPlot.min.css": "uPlot.min.css",
            "LICENSE": "LICENSE",
        },
    ),
)


class VendorError(Exception):
    """A fetch or a check failed; the message says which package or file and why."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(pkg: Package, workdir: Path) -> Path:
    """The package's tarball from the npm registry, checked against its pinned integrity."""
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError("npm is not on PATH (Debian: apt-get install npm)")
    spec = f"{pkg.name}@{pkg.version}"
    proc = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    if proc.returncode != 0:
        raise VendorError(f"npm pack {spec} failed: {proc.stderr.strip()}")
    tarball = workdir / json.loads(proc.stdout)[0]["filename"]
    if (got := integrity(tarball.read_bytes())) != pkg.integrity:
        raise VendorError(f"{spec}: integrity {got} is not the pinned {pkg.integrity}")
    return tarball


def unpack(pkg: Package, tarball: Path) -> dict[str, bytes]:
    """The listed files, read from the tarball (nothing is extracted to disk by path)."""
    out = {}
    with tarfile.open(tarball) as tar:
        for src, name in pkg.files.items():
            try:
                member = tar.extractfile(f"package/{src}")
            except KeyError:
                member = None
            if member is None:
                raise VendorError(f"{pkg.name}@{pkg.version} has no file {src}")
            out[f"{pkg.dest}/{name}"] = member.read()
    return out


def vendor(target: Path = VENDOR) -> dict:
    """Fetch every package and replace `target` with their files and the manifest."""
    files: dict[str, bytes] = {}
    manifest: dict = {"packages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in PACKAGES:
            got = unpack(pkg, fetch(pkg, Path(tmp)))
            files.update(got)
            manifest["packages"][pkg.name] = {
                "version": pkg.version,
                "integrity": pkg.integrity,
                "files": {path: sha256(data) for path, data in sorted(got.items())},
            }
    shutil.rmtree(target, ignore_errors=True)
    for path, data in files.items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_bytes(data)
    (target / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def check(target: Path = VENDOR) -> list[str]:
    """What is wrong with the vendored files: each problem in one line, none when they
    are exactly what the pins and the manifest say."""
    try:
        manifest = json.loads((target / "MANIFEST.json").read_text())["packages"]
    except (OSError, ValueError, KeyError) as e:
        return [f"no readable MANIFEST.json in {target}: {e} (run `make vendor`)"]
    problems = []
    listed = set()
    for pkg in PACKAGES:
        entry = manifest.get(pkg.name) or {}
        pinned = (entry.get("version"), entry.get("integrity")) == (pkg.version, pkg.integrity)
        if not pinned or not isinstance(entry.get("files"), dict):
            problems.append(f"{pkg.name}: the manifest is not pinned {pkg.version} (make vendor)")
            continue
        for path, digest in entry["files"].items():
            listed.add(path)
            try:
                data = (target / path).read_bytes()
            except OSError:
                problems.append(f"{path}: missing")
                continue
            if sha256(data) != digest:
                problems.append(f"{path}: sha256 differs from the manifest")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        rel = path.relative_to(target).as_posix()
        if rel != "MANIFEST.json" and rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/vendor.py", description=__doc__)
    parser.add_argument("--check", action="store_true", help="verify, fetch nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    try:
        manifest = vendor()
    except VendorError as e:
        print(e, file=sys.stderr)
        return 1
    for name, entry in manifest["packages"].items():
        print(f"{name}@{entry['version']}: {', '.join(entry['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
