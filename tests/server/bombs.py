"""Archives that promise more than they hold, for the extraction-limit tests."""

from __future__ import annotations

import gzip
import tarfile


def declared_tgz(size: int, members: int = 1) -> bytes:
    """A tiny .tar.gz whose headers promise `members` files of `size` bytes each (PAX headers
    carry sizes beyond 8 GiB); the content is never there, as in a crafted bomb."""
    raw = b""
    for n in range(members):
        info = tarfile.TarInfo(f"huge{n}.dcm")
        info.size = size
        raw += info.tobuf(tarfile.PAX_FORMAT)
    return gzip.compress(raw + b"\0" * 1024)
