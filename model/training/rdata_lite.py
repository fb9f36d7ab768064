"""Read character vectors out of an R lazy-load database (``Rdata.rdb``/``Rdata.rdx``) without R.

Only what the Debian text packages need: XDR serialization version 2/3, character/logical/integer/
double vectors, generic lists, pairlists and attributes. Written so that the corpus builder does not
depend on ``rdata`` (whose pandas/xarray import chain is fragile) — a few dozen lines of format.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

_NILVALUE, _REF, _GLOBALENV, _UNBOUND, _MISSING, _BASENS = 254, 255, 253, 252, 251, 250
_NAMESPACE, _PACKAGE, _PERSIST, _EMPTYENV, _BASEENV = 249, 248, 247, 242, 241


class _Reader:
    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("only XDR R serialization is supported")
        self.data = data
        self.pos = 2
        self.refs: list[Any] = []
        version = self.int()
        self.int()
        self.int()
        if version == 3:
            n = self.int()
            self.pos += n

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if kind in (_NILVALUE, _GLOBALENV, _UNBOUND, _MISSING, _BASENS, _EMPTYENV, _BASEENV, 0):
            return None
        if kind == _REF:
            index = flags >> 8
            if index == 0:
                index = self.int()
            return self.refs[index - 1]
        if kind in (_PERSIST, _NAMESPACE, _PACKAGE):
            self.int()
            names = [self.item() for _ in range(self.int())]
            self.refs.append(names)
            return names
        if kind == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            text = self.data[self.pos : self.pos + n].decode("utf-8", "replace")
            self.pos += n
            return text
        if kind in (2, 6, 239, 240):  # pairlist / language
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            del attr
            out = [(tag, car)]
            if isinstance(cdr, list) and cdr and isinstance(cdr[0], tuple):
                out.extend(cdr)
            return out
        if kind == 4:  # ENVSXP
            self.int()
            env: dict = {}
            self.refs.append(env)
            self.item()  # enclosure
            self.item()  # frame
            self.item()  # hash table
            self.item()  # attributes
            return env
        if kind in (10, 13):
            n = self.int()
            values = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == 14:
            n = self.int()
            values = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind in (16, 19, 20):
            n = self.int()
            values = [self.item() for _ in range(n)]
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            self.item()
        return values


def _unpack(blob: bytes) -> Any:
    (length,) = struct.unpack_from(">I", blob, 0)
    data = zlib.decompress(blob[4:])
    assert len(data) == length
    return _Reader(data).item()


def read_lazyload(prefix: str | Path) -> dict[str, Any]:
    """All objects of ``prefix.rdb``/``prefix.rdx`` (e.g. ``.../janeaustenr/data/Rdata``) by name."""
    prefix = Path(prefix)
    rdx = gzip.decompress(Path(f"{prefix}.rdx").read_bytes())
    # index is a VECSXP (its names attribute skipped): [variables, references, compressed]
    variables = _Reader(rdx).item()[0]
    rdb = Path(f"{prefix}.rdb").read_bytes()
    names = _names_of(rdx)
    out: dict[str, Any] = {}
    for name, (offset, length) in zip(names, variables, strict=False):
        out[name] = _unpack(rdb[int(offset) : int(offset) + int(length)])
    return out


def _names_of(rdx: bytes) -> list[str]:
    """Names of the ``variables`` list (the attribute our reader skips)."""
    reader = _Reader(rdx)
    reader.int()  # outer VECSXP flags
    reader.int()  # length
    flags = reader.int()  # variables VECSXP
    n = reader.int()
    for _ in range(n):
        reader.item()
    if not flags & (1 << 9):
        return []
    attrs = reader.item()
    for tag, value in attrs:
        if tag == "names":
            return value
    return []
