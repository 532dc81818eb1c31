"""The embedded server's settings, each resolved once, in one order, with its type checked.

Every setting comes from, first to last: the `create_app` keyword argument (lower case:
`create_app(dir, container_workers=2)`; `xnat-ml serve` passes its options this way), the
environment variable `XNAT_ML_<NAME>`, the default. `None` as an argument, or an empty
variable, means "not given".
Text from the environment (or a text argument) is converted to the setting's type; a value that
does not convert is an `XnatMlError` of one line naming the setting, where it came from and the
value. The result lands in `app.config[NAME]`, where the rest of the server reads it.

`SETTINGS` below is the table of them all (name, default, conversion, what it does); the env
var is always XNAT_ML_ and the name. docs/server.md shows the same table;
tests/server/test_config.py checks that the two agree.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.server.formats.zipfiles import ExtractLimits

ENV_PREFIX = "XNAT_ML_"


class ConfigError(XnatMlError):
    """A setting's value that cannot be used, or a setting that does not exist."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("not a non-empty text")
    if re.search(r"[\x00-\x1f\x7f-\x9f]", value):
        raise ValueError("not a text without control characters")
    return value


def _site_id(value: Any) -> str:
    """Accession IDs (SITE_S00001) go into URLs and folder names: letters, digits, '_'."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,32}", value):
        raise ValueError("not 1 to 32 letters, digits or '_'")
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("not an http(s) URL")
    return value


def _count(value: Any) -> int:
    """A whole number >= 0 (an int, or its decimal text)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError("not a whole number >= 0")


def _positive(value: Any) -> int:
    number = _count(value)
    if number == 0:
        raise ValueError("not a whole number >= 1")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError("not true or false")


def _json_of(kind: type, what: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"not JSON ({what} expected)") from None
        if not isinstance(value, kind):
            raise ValueError(f"not {what}")
        return value

    return convert


def _options(value: Any) -> dict:
    options = _json_of(dict, "a JSON object")(value)
    if not all(isinstance(key, str) and key.isidentifier() for key in options):
        raise ValueError("its keys are not all option names")
    return options


def _raw_inputs(value: Any) -> list[str]:
    names = _json_of(list, "a JSON list")(value)
    if not all(isinstance(n, str) and n.count(":") == 1 and ":" not in (n[0], n[-1])
               for n in names):  # fmt: skip
        raise ValueError("not a list of COMMAND:INPUT")
    return names


def _backend(value: Any) -> str:
    from xnat_ml.containers.backends import BACKENDS

    if value not in BACKENDS:
        raise ValueError(f"not one of {', '.join(BACKENDS)}")
    return value


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any  # already of the setting's type; None: unset
    convert: Callable[[Any], Any]  # value or text → the typed value; ValueError says why not
    doc: str  # what it does

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    def resolve(self, given: Any, environ: Mapping[str, str]) -> Any:
        """The argument if given, else the environment variable if set, else the default."""
        if given is not None:
            source, value = f"argument {self.name.lower()}", given
        elif environ.get(self.env):  # set and not empty
            source, value = f"environment variable {self.env}", environ[self.env]
        else:
            return copy.copy(self.default)  # a list or dict default is each app's own
        try:
            return self.convert(value)
        except ValueError as exc:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise ConfigError(f"setting {self.name} ({source}): {shown} is {exc}") from None


# fmt: off
SETTINGS = (
    Setting("SITE_ID", "XNAT", _site_id,
            "prefix of accession IDs (XNAT_S00001, XNAT_E00001)"),
    Setting("XNAT_VERSION", "1.8.10", _text,
            "the XNAT version the server reports"),
    Setting("SITE_URL", None, _url,
            "URL jobs call the server at (XNAT_HOST); unset: the address it listens on"),
    Setting("ADMIN_PASSWORD", "admin", _text,
            "password of the site administrator `admin`, set when the data folder is new"),
    Setting("SESSION_LIFETIME_S", 12 * 3600, _positive,
            "idle seconds before a JSESSIONID expires (sliding)"),
    Setting("TOKEN_LIFETIME_S", 2 * 24 * 3600, _positive,
            "seconds an alias token stays valid (XNAT's default: 2 days)"),
    Setting("MAX_CONTENT_LENGTH", 64 * 2**30, _positive,
            "largest request body, in bytes (413 past it); 64 GiB holds a zip of many large "
            "CT/MR sessions"),
    Setting("EXTRACT_MAX_BYTES", ExtractLimits.max_bytes, _positive,
            "bytes one uploaded archive may expand to (zip bombs; never past the free disk)"),
    Setting("EXTRACT_MAX_FILES", ExtractLimits.max_members, _positive,
            "files one uploaded archive may hold"),
    Setting("DISK_RESERVE_BYTES", 4 * 2**20, _count,
            "space kept in DATA/reserve.bin and given up so that deletes work on a full disk"),
    Setting("CONTAINER_BACKEND", "local", _backend,
            "where launched commands run: local, docker or slurm"),
    Setting("CONTAINER_WORKERS", 4, _positive,
            "jobs staged, started and uploaded at once"),
    Setting("CONTAINER_BACKEND_OPTIONS", {}, _options,
            "JSON object of backend settings (docker_url, slurm_partition, ...)"),
    Setting("CONTAINER_MAX_ATTEMPTS", 3, _positive,
            "times a job is queued, requeues after server restarts included (1: never requeue)"),
    Setting("CONTAINER_RAW_INPUTS", [], _raw_inputs,
            "JSON list of COMMAND:INPUT whose values go into command lines unquoted"),
    Setting("EVENT_SERVICE_ENABLED", True, _flag,
            "whether archive changes raise events (PUT /xapi/events/prefs switches it)"),
)
# fmt: on


def resolve(arguments: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Every setting's value (by upper-case name) from `create_app`'s keyword arguments and
    the environment; ConfigError for an unknown argument or a value of the wrong type."""
    known = {s.name.lower(): s for s in SETTINGS}
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ConfigError(
            f"create_app: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return {s.name: s.resolve(arguments.get(s.name.lower()), environ) for s in SETTINGS}
