"""Reading a pushed pack with limits on what it inflates to, before dulwich sees it.

A pack's size says little about its content: zlib packs a 256 MiB run of text into a few
hundred KiB, and dulwich inflates each object whole in memory while indexing (a delta's
result too, up to the size its header declares). So the pack is copied to a file first
and read here object by object: each object's declared size (a delta's: its instructions
and the result size they declare) must be within `max_object`, checked from the header
before inflating; all of them together within `max_total`; and each zlib stream is
inflated in 64 KiB pieces that are counted and dropped, so a stream that inflates beyond
what its header says is caught with at most one piece in memory. Only a pack that passes
is handed to dulwich (which holds objects to the declared sizes).
"""

import os
import zlib
from typing import BinaryIO

from dulwich.object_store import PackInputTooLarge

PIECE = 64 * 1024
OFS_DELTA, REF_DELTA = 6, 7
KINDS = {1: "commit", 2: "tree", 3: "blob", 4: "tag", OFS_DELTA: "delta", REF_DELTA: "delta"}
HASH = 20  # sha1


class PackLimit(Exception):
    """The pack holds an object over `max_object`, or inflates to over `max_total`."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key  # the setting that was exceeded


class BadPack(Exception):
    """The bytes are no pack (dulwich would refuse them too; this says where)."""


class _Stream:
    """The client's bytes, each copied to `out` as it is read."""

    def __init__(self, read_some, out: BinaryIO, max_bytes: int):
        self.read_some = read_some
        self.out = out
        self.max_bytes = max_bytes
        self.total = 0
        self.buf = b""
        self.pos = 0

    def _more(self) -> None:
        data = self.read_some(PIECE)
        if not data:
            raise BadPack("the pack ends early")
        self.total += len(data)
        if self.total > self.max_bytes:
            raise PackInputTooLarge(f"pack exceeds maximum input size of {self.max_bytes} bytes")
        self.out.write(data)
        self.buf = self.buf[self.pos :] + data
        self.pos = 0

    def take(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            self._more()
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def chunk(self) -> bytes:
        if self.pos == len(self.buf):
            self._more()
        data = self.buf[self.pos :]
        self.pos = len(self.buf)
        return data

    def unread(self, n: int) -> None:
        self.pos -= n


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


def scan_pack(read_some, out: BinaryIO, *, max_bytes: int, max_object: int, max_total: int) -> int:
    """Copy one pack from `read_some` (returns up to n bytes, at least one) to `out`,
    checking it as described above; the total it inflates to."""
    s = _Stream(read_some, out, max_bytes)
    head = s.take(12)
    if head[:4] != b"PACK" or int.from_bytes(head[4:8], "big") not in (2, 3):
        raise BadPack("no pack header")
    count = int.from_bytes(head[8:12], "big")
    total = 0

    def over(size: int, what: str, i: int) -> None:
        if size > max_object:
            raise PackLimit(
                "git.max_object_bytes",
                f"object {i + 1} of the pack ({what}) inflates to {size} bytes, over the "
                f"limit of {max_object}",
            )

    for i in range(count):
        byte = s.take(1)[0]
        kind, size, shift = (byte >> 4) & 7, byte & 0x0F, 4
        while byte & 0x80:
            if shift > 60:
                raise BadPack(f"object {i + 1}: a malformed header")
            byte = s.take(1)[0]
            size |= (byte & 0x7F) << shift
            shift += 7
        if kind not in KINDS:
            raise BadPack(f"object {i + 1}: unknown type {kind}")
        if kind == OFS_DELTA:
            while s.take(1)[0] & 0x80:
                pass
        elif kind == REF_DELTA:
            s.take(HASH)
        over(size, KINDS[kind], i)  # from the header, before a byte is inflated
        if kind not in (OFS_DELTA, REF_DELTA):
            total += size
        z = zlib.decompressobj()
        produced, start, result = 0, b"", None
        while not z.eof:
            data = z.decompress(s.chunk(), PIECE)
            while True:
                produced += len(data)
                if produced > size:
                    raise BadPack(f"object {i + 1} inflates beyond its declared {size} bytes")
                if result is None and kind in (OFS_DELTA, REF_DELTA) and len(start) < 20:
                    start += data[:20]
                    src = _varint(start)
                    dest = src and _varint(start[src[1] :])
                    if dest:  # the size the delta's result declares
                        result = dest[0]
                        over(result, "the result of a delta", i)
                        total += result
                if not z.unconsumed_tail or z.eof:
                    break
                data = z.decompress(z.unconsumed_tail, PIECE)
        s.unread(len(z.unused_data))
        if produced != size:
            raise BadPack(f"object {i + 1} inflates to {produced} bytes, not {size}")
        if kind in (OFS_DELTA, REF_DELTA) and result is None:
            raise BadPack(f"object {i + 1}: a delta without its sizes")
        if total > max_total:
            raise PackLimit(
                "git.max_push_inflated_bytes",
                f"the pack inflates to more than {max_total} bytes (after {i + 1} of its "
                f"{count} objects)",
            )
    s.take(HASH)  # the checksum: dulwich verifies it
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
