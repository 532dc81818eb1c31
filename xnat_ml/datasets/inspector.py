"""The ``inspect`` callback over XNAT: NIfTI headers by HTTP Range, label files whole, in parallel.

The core calls ``inspect`` once per file, one session after another. Here every file a build
will inspect is read first, WORKERS at a time, and ``inspect`` then answers from memory. An
image needs its header only: a ``Range: bytes=0-4095`` request (a server without Range support
answers 200 with the whole file; the stream is then closed after HEADER_BYTES). A label file is
read whole (label files are small) for its voxel values.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import requests
from xnat.session import XNATSession

from xnat_ml.datasets.nifti import HEADER_BYTES, nifti_info
from xnat_ml.datasets.records import FileRef, NiftiInfo
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import explain

WORKERS = 8


class ArchiveInspector:
    """``inspect`` for ``build_dataset``, filled by ``prefetch``."""

    def __init__(self, session: XNATSession) -> None:
        self.session = session
        self.results: dict[tuple[str, bool], NiftiInfo | XnatMlError] = {}
        self.requests = 0
        self.bytes_read = 0

    def prefetch(self, wanted: Iterable[tuple[FileRef, bool]]) -> None:
        """Read every (file, want_values) not read yet, in parallel."""
        todo = sorted({(ref.uri, values) for ref, values in wanted} - set(self.results))
        with ThreadPoolExecutor(WORKERS) as pool:
            for key, result in zip(todo, pool.map(self._read, todo), strict=True):
                self.results[key] = result

    def __call__(self, ref: FileRef, want_values: bool) -> NiftiInfo:
        key = (ref.uri, want_values)
        if key not in self.results:
            self.prefetch([(ref, want_values)])
        result = self.results[key]
        if isinstance(result, XnatMlError):
            raise result
        return result

    def _read(self, key: tuple[str, bool]) -> NiftiInfo | XnatMlError:
        uri, values = key
        try:
            data = self._get(uri, whole=values)
            return nifti_info(data, values=values, source=uri)
        except XnatMlError as exc:
            return exc

    def _get(self, uri: str, whole: bool) -> bytes:
        headers = {} if whole else {"Range": f"bytes=0-{HEADER_BYTES - 1}"}
        self.requests += 1
        try:
            with self.session.interface.get(
                self.session._format_uri(uri),  # xnatpy's own URL builder for a path
                headers=headers, stream=True, timeout=(10, 300),
            ) as response:  # fmt: skip
                if response.status_code not in (200, 206):
                    raise XnatMlError(
                        f"file {uri}: {explain(response.status_code, response.text)}"
                    )
                if whole:
                    data = response.content
                else:  # 206, or a server that ignores Range: stop after the header
                    data = b""
                    for chunk in response.iter_content(HEADER_BYTES):
                        data += chunk
                        if len(data) >= HEADER_BYTES:
                            break
        except requests.RequestException as exc:
            raise XnatMlError(f"file {uri}: cannot be read ({type(exc).__name__})") from None
        self.bytes_read += len(data)
        return data
