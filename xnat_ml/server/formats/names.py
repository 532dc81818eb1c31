"""Characters no name may hold: labels, IDs, file paths, archive members and user names.

Control characters (C0, DEL, C1) end up in logs, terminals and file systems; bidirectional
overrides, isolates and marks make a name display differently from what it is (`exe.txt` that
is really `txt.exe`). Both are refused, never cleaned up: a client sending them is broken or
hostile.
"""

from __future__ import annotations

# U+202A-U+202E embeddings and overrides, U+2066-U+2069 isolates, LRM, RLM and the Arabic mark.
BIDI_CONTROLS = frozenset(
    [chr(code) for code in range(0x202A, 0x202F)]
    + [chr(code) for code in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
)


def unsafe_character(text: str) -> str | None:
    """What the first forbidden character of `text` is ('control character U+0000'), or None."""
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return f"control character U+{code:04X}"
        if char in BIDI_CONTROLS:
            return f"bidirectional control character U+{code:04X}"
    return None
