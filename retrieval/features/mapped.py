"""Gallery vectors left on disk: the rows of many shards, read block by block through memory maps.

A shard is an uncompressed .npz (a zip whose members are stored as they are), so its
`vectors.npy` member is a plain .npy image at a fixed offset of the file and can be mapped
in place: no second copy of the gallery on disk, nothing to build or keep in step. A map
lives only while a block is copied out of it (widened to float32 on the way), so the pages
it touched leave the process with it: what the search keeps resident is its blocks, not
the gallery (the page cache may still hold the file; it is the kernel's, and reclaimable).

A map skips the zip's CRC-32, which `np.load` checks, so a member is verified before it is
mapped (`verify_member`): one sequential read, once per process for each state of the file.
"""
from __future__ import annotations

import functools
import mmap
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")
VERIFY_CHUNK = 4 << 20
"""Bytes read at a time while checking a member's CRC-32."""
_verified: set[tuple] = set()
"""(path, member, device, inode, size, mtime, ctime) of every member whose CRC this process checked."""
_LOCAL_HEADER = struct.Struct("<4s22xHH")
"""A zip local file header: signature, then (after 22 bytes) file-name and extra-field lengths."""


@dataclass(frozen=True)
class MemberLayout:
    """Where an .npz member's array lies in the file."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


def locate_member(path: Path, name: str) -> MemberLayout:
    """The layout of array `name` of the .npz at `path`, checked against the file's size.

    Raises what `np.load` raises on a damaged file (zipfile.BadZipFile, ValueError, KeyError,
    OSError), so a truncated shard is met here, before any search maps past its end."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"its {name} are stored compressed, so they cannot be memory-mapped")
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"no zip entry where {name} should start")
        handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        offset = handle.tell()
    if fortran_order or dtype.hasobject:
        raise ValueError(f"its {name} are not a plain C-ordered array")
    end = offset + int(np.prod(shape)) * dtype.itemsize
    if end > os.path.getsize(path):
        raise ValueError(f"it is truncated ({os.path.getsize(path)} bytes, its {name} end at byte {end})")
    return MemberLayout(path, offset, tuple(shape), dtype)


def verify_member(path: Path, name: str) -> None:
    """Check the CRC-32 that the .npz at `path` records for array `name` against its bytes, as
    `np.load` does when it reads them, unless this process checked the same state of the file
    (device, inode, size, mtime and ctime: a rewrite or a replacement is checked again).

    Raises zipfile.BadZipFile ("Bad CRC-32 for file 'vectors.npy'") when they differ."""
    stat = os.stat(path)
    state = (str(Path(path).resolve()), name, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if state not in _verified:
        _check_crc(path, name)
        _verified.add(state)


def _check_crc(path: Path, name: str) -> None:
    """Read member `name` to its end, which is when zipfile compares its CRC-32."""
    with zipfile.ZipFile(path) as archive, archive.open(name + ".npy") as member:
        while member.read(VERIFY_CHUNK):
            pass


@dataclass(frozen=True)
class Piece:
    """Rows `lo:hi` of one shard's vectors."""

    layout: MemberLayout
    lo: int
    hi: int


class MappedRows:
    """(n_rows, D) rows made of shard pieces in order, read on demand; what `Features.vectors`
    holds for a memory-mapped gallery. Slicing returns an ndarray of the rows (stored dtype);
    `read_into` fills a caller's buffer (widening as it copies), the search's way in."""

    def __init__(self, pieces: list[Piece], dim: int, dtype: np.dtype):
        self.pieces = _coalesced(pieces)
        self.starts = np.cumsum([0] + [piece.hi - piece.lo for piece in self.pieces])
        self.shape = (int(self.starts[-1]), dim)
        self.dtype = np.dtype(dtype)

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read_into(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """Rows `lo:hi` copied (cast) into `out[: hi - lo]`, one short-lived map per shard touched."""
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        for at in range(max(first, 0), len(self.pieces)):
            start = int(self.starts[at])
            if start >= hi:
                break
            piece = self.pieces[at]
            a, b = max(lo, start), min(hi, int(self.starts[at + 1]))
            _with_rows(piece.layout, piece.lo + a - start, b - a, functools.partial(widen_into, out[a - lo : b - lo]))
        return out[: hi - lo]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            rows = self.read_into(lo, max(lo, hi), np.empty((max(hi - lo, 0), self.shape[1]), self.dtype))
            return rows[::step] if step != 1 else rows
        if isinstance(index, (int, np.integer)):
            row = int(index) + (len(self) if index < 0 else 0)
            return self[row : row + 1][0]
        wanted = np.asarray(index)
        flat = np.flatnonzero(wanted) if wanted.dtype == bool else wanted.ravel()
        flat = np.where(flat < 0, flat + len(self), flat)
        piece_of = np.searchsorted(self.starts, flat, side="right") - 1
        out = np.empty((len(flat), self.shape[1]), self.dtype)
        for at in np.unique(piece_of).tolist():  # one map per shard, only the wanted rows read
            mine = np.flatnonzero(piece_of == at)
            piece, start = self.pieces[at], int(self.starts[at])
            out[mine] = _with_rows(piece.layout, piece.lo, piece.hi - piece.lo, lambda rows: rows[flat[mine] - start])
        return out.reshape(*(wanted.shape if wanted.dtype != bool else (len(flat),)), self.shape[1])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All rows in memory: for the code that needs them there (DBA re-writes every row)."""
        out = np.empty(self.shape, dtype or self.dtype)
        return self.read_into(0, len(self), out)


def widen_into(out: np.ndarray, rows: np.ndarray) -> None:
    """`out[:] = rows`, cast by torch (vectorised, threaded half -> float), not numpy's scalar loop."""
    torch.from_numpy(out).copy_(torch.from_numpy(rows))


def _with_rows(layout: MemberLayout, row: int, count: int, use: Callable[[np.ndarray], T]) -> T:
    """`use(rows)` of `count` rows of a member from row `row`, viewed through a map that is
    closed before returning (so `use` must copy what it keeps), so no page of it stays
    resident in this process. The map is private (copy-on-write, never written: no page is
    copied) so the arrays over it are writable, as torch wants. (Not MAP_POPULATE: on a
    writable private map it copies every page.)"""
    row_bytes = int(np.prod(layout.shape[1:], dtype=np.int64)) * layout.dtype.itemsize
    start = layout.offset + row * row_bytes
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    with open(layout.path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), start - aligned + count * row_bytes, flags=mmap.MAP_PRIVATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=aligned)
    try:
        rows = np.frombuffer(mapped, layout.dtype, count * row_bytes // layout.dtype.itemsize, start - aligned)
        result = use(rows.reshape(count, *layout.shape[1:]))
        del rows  # the map cannot close while an array still views it
        return result
    finally:
        mapped.close()


def _coalesced(pieces: list[Piece]) -> list[Piece]:
    """Adjacent pieces of one shard joined: a listing in shard order becomes one piece per shard."""
    out: list[Piece] = []
    for piece in pieces:
        if piece.hi == piece.lo:
            continue
        if out and out[-1].layout == piece.layout and out[-1].hi == piece.lo:
            out[-1] = Piece(piece.layout, out[-1].lo, piece.hi)
        else:
            out.append(piece)
    return out
