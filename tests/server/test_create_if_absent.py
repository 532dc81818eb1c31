"""A file PUT without overwrite creates the file or answers 409, atomically: of writers racing to
create one new path exactly one succeeds, and the file holds that writer's bytes. Version claims
(xnat_ml/xnat/claims.py) rest on this."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.timeout(300)
WRITERS = 20


def test_racing_puts_of_one_new_path_one_wins(xnat_server, project):
    base = f"{xnat_server.url}/data/projects/{project}/resources/ML_MODELS/files"
    start = threading.Barrier(WRITERS)

    def put(writer: int, number: int) -> int:
        http = xnat_server.session()
        start.wait()
        url = f"{base}/m/v{number}/claim.json"
        return http.put(url, data=f"writer {writer}".encode()).status_code

    for number in (1, 2, 3):
        with ThreadPoolExecutor(WRITERS) as pool:
            codes = list(pool.map(put, range(WRITERS), [number] * WRITERS))
        assert sorted(codes) == [200] + [409] * (WRITERS - 1), codes
        winner = codes.index(200)
        got = xnat_server.session().get(f"{base}/m/v{number}/claim.json")
        assert got.content == f"writer {winner}".encode()
