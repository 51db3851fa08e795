"""How paths and free text are written into outputs: losslessly and safely.

A path is written as given unless it is not valid UTF-8 (a Latin-1 name from an old archive) or starts with ``"``;
then as a double-quoted C-style string (``"caf\\xe9.mp4"``: ``\\xHH`` per byte, ``\\\\`` and ``\\"``) that
:func:`decode_path` maps back to the same bytes. In CSV files a cell starting with ``= + - @``, tab or CR gets a
leading ``'`` (no spreadsheet formulas), undone exactly by :func:`csv_uncell`.
"""

from __future__ import annotations

import os
import re


def encode_path(path: str) -> str:
    """``path`` as written into an output: unchanged, unless it is not valid UTF-8 (a Latin-1 name from an old archive,
    decoded by Python with surrogate escapes) or starts with ``"``; then a double-quoted C-style string with
    ``\\xHH`` for each byte that is not UTF-8 and ``\\\\`` / ``\\"`` for backslash and quote. Inverse:
    :func:`decode_path`."""
    try:
        path.encode("utf-8")
        if not path.startswith('"'):
            return path
    except UnicodeEncodeError:
        pass
    out = ['"']
    for ch in os.fsencode(path).decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in '\\"':
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def decode_path(text: str) -> str:
    """The path :func:`encode_path` wrote (a str that ``open()`` / ``os.fsencode`` map back to the same bytes)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    raw = bytearray()
    i, body = 0, text[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\" and body[i + 1 : i + 2] == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2 : i + 4]):
            raw.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif ch == "\\" and i + 1 < len(body):
            raw += body[i + 1].encode("utf-8")
            i += 2
        else:
            raw += ch.encode("utf-8")
            i += 1
    return os.fsdecode(bytes(raw))


_FORMULA = re.compile(r"^'*[=+\-@\t\r]")


def csv_cell(s: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula: a leading ``'`` before ``= + - @``, tab or CR (and
    before a cell that already starts with quotes then one of those, so that :func:`csv_uncell` is exact)."""
    return "'" + s if _FORMULA.match(s) else s


def csv_uncell(s: str) -> str:
    return s[1:] if s.startswith("'") and _FORMULA.match(s) else s


def _path_cell(path: str) -> str:
    return csv_cell(encode_path(path))


def _cell_path(cell: str) -> str:
    return decode_path(csv_uncell(cell))
