"""Reading a pushed pack with limits on what it inflates to, before git indexes it.

A pack's size says little about its content: zlib packs a 256 MiB run of text into a few
hundred KiB, and an indexer holds each object whole in memory up to the size its header
declares (a delta's result too, which a few KiB of copy instructions can make gigabytes).
So the pack is read here object by object as it arrives: each object's declared size (a
delta's: its instructions and the result size they declare) must be within `max_object`,
checked from the header before inflating; all of them together within `max_total`; and
each zlib stream is inflated in 64 KiB pieces that are counted and dropped, so a stream
that inflates beyond what its header says is caught with at most one piece in memory.

What has passed goes on to `out` (`git index-pack`, gitstore/indexpack.py, reading as the
scan goes): an object's bytes only once its header has passed, and the checksum only once
every delta's result has, since git resolves deltas only after the checksum. So git never
sees a size over the limits, and a pack that fails leaves it with nothing it could use.
"""

import os
import zlib
from typing import BinaryIO

from dulwich.object_store import PackInputTooLarge

PIECE = 64 * 1024
FIRST_FEED = 64  # beyond an object's declared size: zlib's own header, trailer, block marks
OFS_DELTA, REF_DELTA = 6, 7
KINDS = {1: "commit", 2: "tree", 3: "blob", 4: "tag", OFS_DELTA: "delta", REF_DELTA: "delta"}
HASH = 20  # sha1
HEADER = 10 + HASH  # an object's header at most: its size, a delta's base


class PackLimit(Exception):
    """The pack holds an object over `max_object`, or inflates to over `max_total`."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key  # the setting that was exceeded


class BadPack(Exception):
    """The bytes are no pack (git would refuse them too; this says where)."""


class _Stream:
    """The client's bytes, read in pieces and passed on to `out` a piece at a time: only
    what is before the point the scan has checked (`fill` is called there)."""

    def __init__(self, read_some, out: BinaryIO, max_bytes: int):
        self.read_some = read_some
        self.out = out
        self.max_bytes = max_bytes
        self.total = 0
        self.ended = False

    def fill(self, buf: bytes, pos: int, want: int) -> bytes:
        """Send `buf` up to `pos` (checked), then read until at least `want` bytes follow
        it or the input ends (at least one must); what follows `pos`, and what was read."""
        if pos:
            self.out.write(memoryview(buf)[:pos])
        buf = buf[pos:]
        while len(buf) < want and not self.ended:
            data = self.read_some(PIECE)
            if not data:
                self.ended = True
                break
            self.total += len(data)
            if self.total > self.max_bytes:
                raise PackInputTooLarge(
                    f"pack exceeds maximum input size of {self.max_bytes} bytes"
                )
            buf += data
        if not buf:
            raise BadPack("the pack ends early")
        return buf


def _varint(data: bytes) -> tuple[int, int] | None:
    """A delta header's size (7 bits a byte, low first) and the bytes it took; None if
    `data` ends inside it."""
    value = shift = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i + 1
    return None


def _inflate_rest(
    s: _Stream, z, buf: bytes, end: int, head: bytes, size: int, i: int
) -> tuple[bytes, int, int, bytes]:
    """Inflate the rest of an object's zlib stream, read from `buf` at `end` on, in
    pieces counted and dropped; stopped at the first piece past `size`. The buffer and
    where the last feed ended, the bytes inflated and the first 20 of them."""
    produced = len(head)
    while True:
        if produced > size:
            raise BadPack(f"object {i + 1} inflates beyond its declared {size} bytes")
        if z.eof:
            return buf, end, produced, head
        if z.unconsumed_tail:
            data = z.decompress(z.unconsumed_tail, PIECE)
        else:
            if end == len(buf):  # all read is this object's, its header checked
                buf, end = s.fill(buf, end, 1), 0
            stop = min(end + PIECE, len(buf))
            data = z.decompress(buf[end:stop], PIECE)
            end = stop
        produced += len(data)
        if len(head) < 20:
            head += data[:20]


def scan_pack(read_some, out: BinaryIO, *, max_bytes: int, max_object: int, max_total: int) -> int:
    """Copy one pack from `read_some` (returns up to n bytes, at least one) to `out`,
    checking it as described above; the total it inflates to. No byte of an object
    reaches `out` before its header has passed; the checksum comes last, once all have.

    The loop keeps the input in locals (`buf`, `pos`): its cost is per object, and a
    long history is mostly small objects (a 50,000-commit push holds 200,000)."""
    s = _Stream(read_some, out, max_bytes)
    buf = s.fill(b"", 0, 12)
    if len(buf) < 12 or buf[:4] != b"PACK" or int.from_bytes(buf[4:8], "big") not in (2, 3):
        raise BadPack("no pack header")
    count = int.from_bytes(buf[8:12], "big")
    pos, total = 12, 0

    def over(size: int, what: str, i: int) -> None:
        if size > max_object:
            raise PackLimit(
                "git.max_object_bytes",
                f"object {i + 1} of the pack ({what}) inflates to {size} bytes, over the "
                f"limit of {max_object}",
            )
        if total + size > max_total:
            raise PackLimit(
                "git.max_push_inflated_bytes",
                f"the pack inflates to more than {max_total} bytes (at object {i + 1} of "
                f"its {count})",
            )

    for i in range(count):
        if len(buf) - pos < HEADER:  # a whole header at hand (or the input's end)
            buf, pos = s.fill(buf, pos, HEADER), 0
        try:
            byte = buf[pos]
            kind, size, shift, pos = (byte >> 4) & 7, byte & 0x0F, 4, pos + 1
            while byte & 0x80:
                if shift > 60:
                    raise BadPack(f"object {i + 1}: a malformed header")
                byte = buf[pos]
                size |= (byte & 0x7F) << shift
                shift, pos = shift + 7, pos + 1
            if kind == OFS_DELTA:  # the base's offset: 7 bits a byte, 64 at most
                end = pos + 10
                while buf[pos] & 0x80:
                    pos += 1
                    if pos == end:
                        raise BadPack(f"object {i + 1}: a malformed delta offset")
                pos += 1
            elif kind == REF_DELTA:
                pos += HASH
            if pos > len(buf):
                raise IndexError
        except IndexError:
            raise BadPack(f"object {i + 1}: the pack ends in its header") from None
        what = KINDS.get(kind)
        if what is None:
            raise BadPack(f"object {i + 1}: unknown type {kind}")
        delta = kind >= OFS_DELTA
        if not delta:
            if size > max_object or total + size > max_total:
                over(size, what, i)  # from the header, before a byte is inflated
            total += size
        elif size > max_object:  # the delta itself; its result once its sizes inflate
            over(size, what, i)
        if pos == len(buf):  # all before it checked: it may go on
            buf, pos = s.fill(buf, pos, 1), 0
        z = zlib.decompressobj()
        end = min(pos + size + FIRST_FEED, len(buf))
        head = z.decompress(buf[pos:end], PIECE)  # a small object: whole, in one call
        produced = len(head)
        if not z.eof:
            buf, end, produced, head = _inflate_rest(s, z, buf, end, head, size, i)
        pos = end - len(z.unused_data)
        if produced != size:
            what = "beyond its declared" if produced > size else f"to {produced} bytes, not"
            raise BadPack(f"object {i + 1} inflates {what} {size} bytes")
        if delta:  # git resolves deltas after the checksum: their results are checked first
            src = _varint(head)
            dest = src and _varint(head[src[1] :])
            if not dest:
                raise BadPack(f"object {i + 1}: a delta without its sizes")
            if dest[0] > max_object or total + dest[0] > max_total:
                over(dest[0], "the result of a delta", i)
            total += dest[0]
    if len(buf) - pos < HASH:
        buf, pos = s.fill(buf, pos, HASH), 0
        if len(buf) < HASH:
            raise BadPack("the pack ends before its checksum")
    out.write(memoryview(buf)[: pos + HASH])  # the checksum (git verifies it): all sent
    return total


def stored_size(store, sha: bytes) -> int:
    """The size of a stored object as it inflates, read from its header (a loose object's,
    a pack entry's; a delta's declared result), so measuring a huge blob costs a few
    hundred bytes of inflating; objects found elsewhere (alternates) are read whole."""
    loose = os.path.join(store.path, sha[:2].decode(), sha[2:].decode())
    try:
        with open(loose, "rb") as f:
            head = zlib.decompressobj().decompress(f.read(1024), 64)
        return int(head.split(b"\0", 1)[0].split(b" ")[1])
    except FileNotFoundError:
        pass
    except (ValueError, IndexError, zlib.error):
        return len(store[sha].as_raw_string())
    for pack in store.packs:
        try:
            offset = pack.index.object_offset(sha)
        except KeyError:
            continue
        with open(pack._data_path, "rb") as f:
            f.seek(offset)
            data = f.read(4096)
        byte, pos = data[0], 1
        kind, size, shift = (byte >> 4) & 7, byte & 0x0F, 4
        while byte & 0x80:
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
        if kind not in (OFS_DELTA, REF_DELTA):
            return size
        if kind == OFS_DELTA:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        else:
            pos += HASH
        start = zlib.decompressobj().decompress(data[pos:], 32)
        src = _varint(start)
        dest = src and _varint(start[src[1] :])
        if dest:
            return dest[0]
        break
    return len(store[sha].as_raw_string())
