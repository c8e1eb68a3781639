"""packscan: a pack's objects held to their limits from their headers, before anything is
inflated whole (packs made by the git CLI, and by hand where git would not make them)."""

import hashlib
import io
import subprocess
import zlib
from pathlib import Path

import pytest
from dulwich.object_store import PackInputTooLarge

from hyperhive.gitstore.packscan import BadPack, PackLimit, scan_pack

MiB = 1024 * 1024


def header(kind: int, size: int) -> bytes:
    out = [(kind << 4) | (size & 0x0F)]
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def varint(n: int) -> bytes:
    out = []
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            return bytes(out)
        out[-1] |= 0x80


def pack(*objects: bytes) -> bytes:
    body = b"PACK" + (2).to_bytes(4, "big") + len(objects).to_bytes(4, "big") + b"".join(objects)
    return body + hashlib.sha1(body).digest()


def reader(data: bytes, piece: int = 1000):
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, piece))


def scan(data: bytes, **limits) -> tuple[int, bytes]:
    out = io.BytesIO()
    limits = {"max_bytes": 50 * MiB, "max_object": 10 * MiB, "max_total": 20 * MiB, **limits}
    return scan_pack(reader(data), out, **limits), out.getvalue()


def test_a_pack_from_git_passes_whole_and_is_copied_byte_for_byte(tmp_path: Path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    lines = [f"line {i}\n" for i in range(5000)]
    for n in range(3):  # later versions are deltas of earlier ones
        lines[n * 100] = f"changed {n}\n"
        (tmp_path / "f.txt").write_text("".join(lines))
        subprocess.run([*git, "add", "f.txt"], check=True)
        subprocess.run([*git, "commit", "-qm", str(n)], check=True)
    data = subprocess.run(
        [*git, "pack-objects", "--stdout", "--revs"], input=b"HEAD\n", capture_output=True
    ).stdout
    total, copied = scan(data)
    assert copied == data
    assert total > 3 * len("".join(lines))


def test_a_huge_object_is_refused_from_its_header_before_inflating():
    """A blob declared 1 GiB: refused before a byte is inflated (its zlib stream is not
    even there)."""
    data = pack(header(3, 1024 * MiB) + b"\x78\x9c")
    with pytest.raises(PackLimit, match="blob.*inflates to 1073741824 bytes") as e:
        scan(data)
    assert e.value.key == "git.max_object_bytes"


def test_a_delta_declaring_a_huge_result_is_refused():
    delta = varint(10) + varint(300 * MiB) + bytes([0x90, 0x0A])  # copy 10 bytes from 0
    obj = header(7, len(delta)) + b"\x11" * 20 + zlib.compress(delta)
    with pytest.raises(PackLimit, match="the result of a delta"):
        scan(pack(obj))


def test_the_total_is_held_to_its_limit():
    blob = b"x" * (3 * MiB)
    obj = header(3, len(blob)) + zlib.compress(blob)
    assert scan(pack(obj, obj), max_total=7 * MiB)[0] == 6 * MiB
    with pytest.raises(PackLimit, match="more than 7340032 bytes") as e:
        scan(pack(obj, obj, obj), max_total=7 * MiB)
    assert e.value.key == "git.max_push_inflated_bytes"


def test_a_stream_longer_than_its_header_says_is_caught_in_pieces():
    """A header of 10 bytes over 64 MiB of zeros: stopped at the first piece past 10."""
    obj = header(3, 10) + zlib.compress(b"\0" * (64 * MiB), 9)
    with pytest.raises(BadPack, match="beyond its declared 10 bytes"):
        scan(pack(obj))


@pytest.mark.parametrize(
    "data, error",
    [
        (b"PACX" + bytes(8), BadPack),
        (pack(header(3, 5) + zlib.compress(b"12345"))[:-25], BadPack),
        (pack(header(5, 1) + zlib.compress(b"1")), BadPack),
    ],
    ids=["not-a-pack", "cut", "bad-type"],
)
def test_malformed_packs(data, error):
    with pytest.raises(error):
        scan(data)


def test_the_pack_as_sent_is_held_to_max_bytes():
    blob = bytes(range(256)) * 4096
    with pytest.raises(PackInputTooLarge):
        scan(pack(header(3, len(blob)) + zlib.compress(blob, 0)), max_bytes=100_000)


def test_nothing_of_an_object_goes_on_before_its_header_has_passed():
    """What reaches `out` (git index-pack, reading as the scan goes) is the pack up to the
    last object whose header passed: never the header of one over the limits."""
    small = header(3, 5) + zlib.compress(b"12345")
    huge = header(3, 1024 * MiB) + zlib.compress(b"x")
    data = pack(small, small, huge, small)
    limits = {"max_bytes": 50 * MiB, "max_object": 10 * MiB, "max_total": 20 * MiB}
    for piece in (7, len(data)):  # read in a few bytes at a time, or all at once
        out = io.BytesIO()
        with pytest.raises(PackLimit, match="object 3 of the pack"):
            scan_pack(reader(data, piece), out, **limits)
        passed = data[: 12 + 2 * len(small)]
        assert out.getvalue() == (passed if piece == 7 else b"")  # sent a piece at a time


def test_a_delta_result_over_the_total_is_refused_before_the_checksum_goes_on():
    """git resolves deltas once it has the checksum: a result past the limits stops the
    scan first, the checksum never sent."""
    blob = b"y" * 1000
    base = header(3, len(blob)) + zlib.compress(blob)
    delta = varint(len(blob)) + varint(5 * MiB) + bytes([0x90, 0xE8, 0x03])
    ofs = header(6, len(delta)) + bytes([len(base)]) + zlib.compress(delta)
    data = pack(base, ofs)
    out = io.BytesIO()
    limits = {"max_bytes": 50 * MiB, "max_object": 10 * MiB, "max_total": 4 * MiB}
    with pytest.raises(PackLimit, match="more than 4194304 bytes") as e:
        scan_pack(reader(data, 7), out, **limits)
    assert e.value.key == "git.max_push_inflated_bytes"
    sent = out.getvalue()
    assert len(sent) >= 12 + len(base) and data[:-20].startswith(sent)
