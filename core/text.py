"""Names from a checkpoint are data from a stranger: before one is shown in a terminal, its
control characters (escape sequences, bidi overrides, line breaks) are made visible instead of
being obeyed. JSON and CSV keep the exact name."""
from __future__ import annotations

import unicodedata

_SHOWN_AS_ESCAPES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def _escape(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def printable(text: str) -> str:
    """``text`` with every control or format character written as a Python-style escape."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(_escape(ch) if ch != " " and unicodedata.category(ch) in _SHOWN_AS_ESCAPES else ch for ch in text)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line (its type when it has no message), cut to ``limit`` characters:
    enough to say what went wrong inside one of our own messages."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
