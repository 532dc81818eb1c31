"""File names for ROI and segment names, which may hold anything (``/``, ``..``, any Unicode).

Standard library only, so the CLI can show the rule in its help without loading pydicom.
"""

from __future__ import annotations

import unicodedata

RESERVED_STEMS = {"labels", "masks"}  # the files written beside the ROI masks
MAX_STEM_CHARS = 100
NAMING_RULE = (
    "Unicode NFKD with accents dropped; characters other than A-Z a-z 0-9 . _ - become _; "
    "leading dots and underscores stripped; at most 100 characters; empty becomes 'roi'; "
    "a stem equal (ignoring case) to an earlier one or to 'labels'/'masks' gets _2, _3, ..."
)


def safe_stems(names: list[str]) -> list[str]:
    """File stems for ROI names that cannot leave the output folder or collide (NAMING_RULE)."""
    taken: set[str] = set(RESERVED_STEMS)
    stems = []
    for name in names:
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in ascii_name)
        stem = stem.lstrip("._")[:MAX_STEM_CHARS].rstrip(".") or "roi"
        candidate, n = stem, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(candidate.casefold())
        stems.append(candidate)
    return stems
