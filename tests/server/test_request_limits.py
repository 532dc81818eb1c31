"""Request bodies are bounded (issue 15, finding 6): MAX_CONTENT_LENGTH answers 413 in one line
and stores nothing, whether the body says its length or arrives chunked; JSON bodies have their
own size and depth caps, a 400 or 413 naming the body, never a 500 or a RecursionError."""

from __future__ import annotations

import pytest
import requests
from archive_state import assert_consistent

from xnat_ml.server.config import SETTINGS

LIMIT = 1 << 20
PROJECT = "LIMITS"


@pytest.fixture(scope="module")
def small(start_xnat_server):
    """A server whose request bodies may hold 1 MiB."""
    server = start_xnat_server("limits", env={"XNAT_ML_MAX_CONTENT_LENGTH": str(LIMIT)})
    server.session().put(f"{server.url}/data/projects/{PROJECT}").raise_for_status()
    return server


def _files(server, http) -> list[str]:
    listed = http.get(f"{server.url}/data/projects/{PROJECT}/resources/UP/files?format=json")
    return [row["Name"] for row in listed.json()["ResultSet"]["Result"]] if listed.ok else []


def test_the_default_is_finite_and_holds_a_large_study():
    default = next(s.default for s in SETTINGS if s.name == "MAX_CONTENT_LENGTH")
    assert 8 * 2**30 <= default < 2**40


def test_a_body_past_the_limit_is_413_in_one_line_and_stores_nothing(small):
    http = small.session()
    base = f"{small.url}/data/projects/{PROJECT}/resources/UP/files"
    assert http.put(f"{base}/fits.bin", data=b"x" * (LIMIT - 4096)).status_code in (200, 201)
    too_big = http.put(f"{base}/big.bin", data=b"x" * (LIMIT + 1))
    assert too_big.status_code == 413
    assert too_big.text.startswith("413 ") and too_big.text.count("\n") == 1

    def chunks():  # no Content-Length: the limit is applied as the body is read
        for _ in range(3):
            yield b"y" * (LIMIT // 2)

    chunked = http.put(f"{base}/chunked.bin", data=chunks())
    assert chunked.status_code == 413, chunked.text
    assert _files(small, http) == ["fits.bin"]
    assert_consistent(small.data_dir)


def test_deep_json_bodies_are_one_line_400s(small):
    http = small.session()
    deep = b"[" * 100_000 + b"]" * 100_000
    user = http.post(f"{small.url}/xapi/users", data=deep,
                     headers={"Content-Type": "application/json"})  # fmt: skip
    assert user.status_code == 400 and user.text.count("\n") == 1, user.text
    sub = http.post(f"{small.url}/xapi/events/subscription", data=deep,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert sub.status_code == 400 and "nested too deeply" in sub.text, sub.text
    assert sub.text.count("\n") == 1
    command = http.post(f"{small.url}/xapi/commands", data=b'{"name": "x", "xnat": '
                        + b"[" * 65 + b"]" * 65 + b"}")  # fmt: skip
    assert command.status_code == 400 and "nested too deeply" in command.text, command.text


def test_json_bodies_have_their_own_size_cap(xnat_server):
    http = xnat_server.session()
    huge = b'{"name": "' + b"x" * (2 << 20) + b'"}'  # subscriptions are a few hundred bytes
    sub = http.post(f"{xnat_server.url}/xapi/events/subscription", data=huge,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert sub.status_code == 413 and "Subscription body: larger than" in sub.text, sub.text
    command = http.post(f"{xnat_server.url}/xapi/commands", data=huge)
    assert command.status_code == 413 and "Command: larger than" in command.text



def test_a_lower_site_limit_holds_for_json_bodies_too(start_xnat_server):
    """A JSON body's own cap never raises MAX_CONTENT_LENGTH: the lower one holds."""
    tiny = start_xnat_server("tiny-limit", env={"XNAT_ML_MAX_CONTENT_LENGTH": "4096"})
    body = b'{"name": "' + b"x" * 8000 + b'"}'  # far under the subscription cap (1 MiB)
    sub = tiny.session().post(f"{tiny.url}/xapi/events/subscription", data=body,
                              headers={"Content-Type": "application/json"})  # fmt: skip
    assert sub.status_code == 413 and "larger than 4096 bytes" in sub.text, sub.text


def test_filter_validation_reads_a_bounded_body(xnat_server):
    """Any logged-in user may validate a filter: a huge body is refused before it is read,
    a deep one is a 424 naming the problem rather than a RecursionError."""
    xnat_server.add_user("limits_user", "limits-pass")
    http = xnat_server.session("limits_user", "limits-pass")
    url = f"{xnat_server.url}/xapi/events/subscription/filter/validate"
    assert http.post(url, data=b"@.xsiType == 'xnat:mrSessionData'").status_code == 200
    huge = http.post(url, data=b"(" * (2 << 20))
    assert huge.status_code == 413 and "Filter: larger than" in huge.text
    deep = http.post(url, data=b"(" * 2000 + b"1" + b")" * 2000)
    assert deep.status_code == 424 and "nested deeper than 32 levels" in deep.text, deep.text


def test_the_login_form_takes_no_gigabytes(xnat_server):
    """/data/services/auth is open to anyone: a form past 64 KiB is a 413 before it is parsed
    (werkzeug would spool its file parts to the temporary folder)."""
    url = f"{xnat_server.url}/data/services/auth"
    good = requests.post(url, data={"username": xnat_server.user,
                                    "password": xnat_server.password})  # fmt: skip
    assert good.status_code == 200 and good.text.strip()
    spooled = requests.post(url, data={"username": "x", "password": "y"},
                            files={"pad": ("pad.bin", b"\0" * (1 << 20))})  # fmt: skip
    assert spooled.status_code == 413 and spooled.text.count("\n") == 1, spooled.text
