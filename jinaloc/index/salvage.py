"""Reading the rows out of a damaged SQLite file page by page, without SQLite's b-trees.

When SQLite cannot read a table (its header, page 1 or an interior page is damaged), every
intact leaf page still holds its rows. This reads them as the file format lays them out
(https://www.sqlite.org/fileformat2.html): the page size from the header (or, when the
header is gone, the size at which the most pages look like b-tree pages), then each table
leaf page's cells, with their overflow chains, decoded into (rowid, values). Pages on the
freelist are left out when the header still says where it is. Which table a row belongs to
is for the caller to decide (health.py does it by the row's shape).

SQLite's own `.recover` (the sqlite3 shell) does the same and more, but the shell of Debian
12 (3.40.1) is built without the `sqlite_dbpage` table it needs and fails on every file,
and Python's sqlite3 does not expose the recovery API."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEADER = b"SQLite format 3\x00"
LEAF_TABLE = 0x0D
PAGE_TYPES = (0x02, 0x05, 0x0A, 0x0D)
SIZES = (16384, 4096, 1024, 2048, 8192, 32768, 65536, 512)


@dataclass
class Scan:
    """What a page scan found: rows of table leaf pages and what could not be read."""

    page_size: int
    rows: list[tuple[int, int, list]] = field(default_factory=list)  # (page, rowid, values)
    bad_cells: int = 0  # cells of leaf pages that did not decode
    bad_pages: list[int] = field(default_factory=list)  # neither b-tree nor overflow pages
    overflow: set[int] = field(default_factory=set)


def page_size(data: bytes) -> int:
    """The header's page size; when the header is damaged, the size at which the most
    bytes of the file are in pages that are sound b-tree pages."""
    if data[:16] == HEADER:
        size = struct.unpack(">H", data[16:18])[0]
        size = 65536 if size == 1 else size
        if size in SIZES:
            return size
    scores = {
        size: size * sum(_btree_page(data, p * size, size) for p in range(1, len(data) // size))
        for size in SIZES
    }
    return max(scores, key=scores.get)


def _btree_page(data: bytes, at: int, size: int) -> bool:
    """Whether the page at `at` has a b-tree page header whose cells lie inside it."""
    kind = data[at]
    if kind not in PAGE_TYPES:
        return False
    header = 8 if kind in (0x0A, 0x0D) else 12
    cells, content = struct.unpack(">HH", data[at + 3 : at + 7])
    content = content or 65536
    end = header + 2 * cells
    if end > size or not end <= content <= size:
        return False
    pointers = struct.unpack(f">{cells}H", data[at + header : at + end])
    return all(content <= p < size for p in pointers)


def freelist(data: bytes, size: int) -> set[int]:
    """Pages on the freelist (stale rows of deleted pages), when the header still says."""
    if data[:16] != HEADER:
        return set()
    trunk, count = struct.unpack(">II", data[32:40])
    pages: set[int] = set()
    while trunk and trunk not in pages and len(pages) <= count:
        pages.add(trunk)
        at = (trunk - 1) * size
        if at + 8 > len(data):
            break
        following, leaves = struct.unpack(">II", data[at : at + 8])
        leaves = min(leaves, size // 4 - 2)
        pages.update(struct.unpack(f">{leaves}I", data[at + 8 : at + 8 + 4 * leaves]))
        trunk = following
    return pages


def scan(data: bytes) -> Scan:
    """Every row of every intact table leaf page of an SQLite file's bytes."""
    size = page_size(data)
    usable = size - (data[20] if data[:16] == HEADER else 0)
    free = freelist(data, size)
    result = Scan(size)
    for number in range(1, len(data) // size + 1):
        if number in free:
            continue
        start = (number - 1) * size
        head = start + (100 if number == 1 else 0)
        kind = data[head]
        if number == 1 and data[:16] != HEADER:
            result.bad_pages.append(1)
        if kind != LEAF_TABLE:
            if kind not in PAGE_TYPES and number != 1:
                result.bad_pages.append(number)  # or an overflow page: told apart below
            continue
        try:
            cells = struct.unpack(">H", data[head + 3 : head + 5])[0]
            pointers = struct.unpack(f">{cells}H", data[head + 8 : head + 8 + 2 * cells])
        except struct.error:
            result.bad_pages.append(number)
            continue
        for pointer in pointers:
            try:
                rowid, values = _cell(data, start, start + pointer, size, usable, result.overflow)
            except (IndexError, ValueError, struct.error, UnicodeDecodeError):
                result.bad_cells += 1
                continue
            result.rows.append((number, rowid, values))
    result.bad_pages = [p for p in result.bad_pages if p not in result.overflow]
    return result


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


def _cell(
    data: bytes, page: int, at: int, size: int, usable: int, overflow: set[int]
) -> tuple[int, list]:
    length, at = _varint(data, at)
    rowid, at = _varint(data, at)
    if rowid >= 1 << 63:
        rowid -= 1 << 64
    most = usable - 35
    if length <= most:
        payload = data[at : at + length]
    else:
        least = (usable - 12) * 32 // 255 - 23
        local = least + (length - least) % (usable - 4)
        local = local if local <= most else least
        payload = bytearray(data[at : at + local])
        following = struct.unpack(">I", data[at + local : at + local + 4])[0]
        seen = set()
        while len(payload) < length:
            if not following or following in seen or following * size > len(data):
                raise ValueError("broken overflow chain")
            seen.add(following)
            overflow.add(following)
            start = (following - 1) * size
            following = struct.unpack(">I", data[start : start + 4])[0]
            payload += data[start + 4 : start + usable][: length - len(payload)]
        payload = bytes(payload)
    if len(payload) != length or at + min(length, most + 4) > page + size:
        raise ValueError("cell past its page")
    return rowid, _record(payload)


def _record(payload: bytes) -> list:
    header, at = _varint(payload, 0)
    types = []
    while at < header:
        t, at = _varint(payload, at)
        types.append(t)
    if at != header:
        raise ValueError("bad record header")
    values = []
    for t in types:
        value, at = _value(payload, at, t)
        values.append(value)
    if at != len(payload):
        raise ValueError("record of the wrong length")
    return values


_INTS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _value(payload: bytes, at: int, t: int):
    if t == 0:
        return None, at
    if t in _INTS:
        n = _INTS[t]
        if at + n > len(payload):
            raise ValueError("value past its record")
        return int.from_bytes(payload[at : at + n], "big", signed=True), at + n
    if t == 7:
        return struct.unpack(">d", payload[at : at + 8])[0], at + 8
    if t in (8, 9):
        return t - 8, at
    if t >= 12:
        n = (t - 12) // 2
        if at + n > len(payload):
            raise ValueError("value past its record")
        raw = payload[at : at + n]
        return (raw.decode("utf-8") if t % 2 else bytes(raw)), at + n
    raise ValueError(f"reserved serial type {t}")


WAL_MAGIC = (0x377F0682, 0x377F0683)


def with_wal(data: bytes, wal: bytes) -> bytes:
    """The file's bytes with the committed frames of its -wal applied (as SQLite would
    read them): frames of the header's salt, up to the last commit frame."""
    if len(wal) < 32 or struct.unpack(">I", wal[:4])[0] not in WAL_MAGIC:
        return data
    size = struct.unpack(">I", wal[8:12])[0]
    salt = wal[16:24]
    pages: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    length = len(data)
    at = 32
    while at + 24 + size <= len(wal):
        number, commit = struct.unpack(">II", wal[at : at + 8])
        if wal[at + 8 : at + 16] != salt or not number:
            break
        pending[number] = wal[at + 24 : at + 24 + size]
        if commit:  # a transaction's last frame: its pages count
            pages |= pending
            pending = {}
            length = commit * size
        at += 24 + size
    if not pages:
        return data
    out = bytearray(data[:length].ljust(length, b"\0"))
    for number, page in pages.items():
        if number * size <= length:
            out[(number - 1) * size : number * size] = page
    return bytes(out)
