"""Configuration is data: user values are literals, settings are capped, JSON is bounded, and a
model version's files are checked against its digests before anything parses them."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from template_paths import TISSUES

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import validate_bundle
from xnat_ml.training.config import check_against_bundle, load_config, parse_config
from xnat_ml.training.digests import DIGESTS_FILE, check_version, write_digests
from xnat_ml.training.literals import is_reserved_key
from xnat_ml.training.model import parse_card, read_card

GOOD: dict[str, Any] = {
    "model": {"name": "m", "version": "1"},
    "dataset": {"name": "d", "version": "2"},
    "training": {"epochs": 3, "device": "cpu"},
    "overrides": {"network_def#channels": [4, 8, 16, 32], "train#dataset#cache_rate": 0.5},
    "resources": {"gpus": 0, "cpus": 4, "memory_gb": 16},
}


def _with(section: str, **values: Any) -> dict[str, Any]:
    config = copy.deepcopy(GOOD)
    config[section].update(values)
    return config


def _one_line(value: dict[str, Any], expected: str) -> None:
    with pytest.raises(XnatMlError) as refused:
        parse_config(value, "cfg.json")
    message = str(refused.value)
    assert expected in message and "\n" not in message, message


HOSTILE = "$exec(\"open('/tmp/MARK','w')\") or 0.002"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"optimizer#lr": HOSTILE}, "cfg.json: overrides.optimizer#lr: '$exec"),
        ({"network_def": "@optimizer"}, "overrides.network_def: '@optimizer' starts with '@'"),
        ({"network_def": "%configs/other.json#net"}, "overrides.network_def: '%configs"),
        ({"train#handlers": [{"_target_": "os.system", "command": "touch MARK"}]},
         "overrides.train#handlers[0]: key '_target_' is reserved by MONAI"),
        ({"network_def#x": {"a": {"_requires_": "$exec('x')"}}},
         "overrides.network_def#x.a: key '_requires_' is reserved"),
        ({"network_def#_target_": "os.system"}, "'network_def#_target_' sets MONAI's reserved key"),
        ({"network_def::_mode_": "callable"}, "sets MONAI's reserved key '_mode_'"),
        ({"network_def#x": [[["$1"]]]}, "overrides.network_def#x[0][0][0]: '$1'"),
        ({"network_def#x": float("nan")}, "overrides.network_def#x: nan is not a finite number"),
        ({"network_def#x": 1e300}, "overrides.network_def#x: 1e+300 is not a finite number"),
        ({"train#trainer#max_epochs": 10**9}, "overrides.train#trainer#max_epochs: must be at "
         "most 100000"),
        ({"train::trainer::max_epochs": 10**9}, "overrides.train::trainer::max_epochs: must be"),
    ],
)  # fmt: skip
def test_override_values_are_plain_data(overrides: dict, expected: str) -> None:
    _one_line({**GOOD, "overrides": overrides}, expected)


def test_every_reserved_key_of_monai_is_refused() -> None:
    from monai.bundle import ConfigComponent, ConfigParser

    for key in [*ConfigComponent.non_arg_keys, ConfigParser.meta_key]:
        assert is_reserved_key(key), key
    assert not is_reserved_key("target") and not is_reserved_key("_private")


def test_plain_strings_and_xnat_mls_own_device_binding_pass(spleen_bundle: Path) -> None:
    config = parse_config(
        {**GOOD, "overrides": {"network_def#norm": "batch", "network_def#act": "PRELU",
                               "note": "costs $5, user@site, 50%"}}, "cfg.json")  # fmt: skip
    overrides = check_against_bundle(config, spleen_bundle)
    assert overrides["device"] == "$torch.device('cpu')"  # written by xnat-ml, not a user value
    assert overrides["note"] == "costs $5, user@site, 50%"


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("training", {"epochs": 1_000_000_000}, "training.epochs: must be at most 100000"),
        ("training", {"batch_size": 10**6}, "training.batch_size: must be at most 4096"),
        ("training", {"workers": 1000}, "training.workers: must be at most 64"),
        ("training", {"learning_rate": float("inf")}, "training.learning_rate: expected a finite"),
        ("training", {"learning_rate": 1e300}, "training.learning_rate: must be positive and at "
         "most 10"),
        ("training", {"patch_size": [10**6] * 3}, "training.patch_size: expected 2 or 3 positive"),
        ("training", {"seed": -1}, "training.seed: must be between 0"),
        ("resources", {"processes": 1_000_000}, "resources.processes: must be at most 64"),
        ("resources", {"gpus": 1000}, "resources.gpus: must be at most 64"),
        ("resources", {"cpus": 10**9}, "resources.cpus: must be at most 1024"),
        ("resources", {"memory_gb": 1e300}, "resources.memory_gb: must be positive and at most "
         "4096"),
        ("resources", {"memory_gb": float("nan")}, "resources.memory_gb: expected a finite"),
    ],
)  # fmt: skip
def test_caps_on_settings_and_resources(section: str, values: dict, expected: str) -> None:
    _one_line(_with(section, **values), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000, "is nested deeper than 64 levels"),
        ('{"model": ' + "[" * 65 + "]" * 65 + "}", "is nested deeper than 64 levels"),
        ('{"overrides": {"a": NaN}}', "is not usable JSON (NaN is not a finite number)"),
        ('{"overrides": {"a": ' + "9" * 5000 + "}}", "is not usable JSON"),
    ],
)
def test_hostile_json_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(text)
    with pytest.raises(XnatMlError) as refused:
        load_config(path)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_deep_bundle_file_is_one_line(tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(TISSUES, tmp_path / "deep"))
    (bundle / "configs" / "inference.json").write_text("[" * 100_000)
    with pytest.raises(XnatMlError, match=r"configs/inference.json is nested deeper than 64"):
        validate_bundle(bundle)


def test_override_without_its_parent_is_refused_before_a_run(spleen_bundle: Path) -> None:
    config = parse_config({**GOOD, "overrides": {"nowhere#lr": 0.1}}, "cfg.json")
    with pytest.raises(XnatMlError, match=r"overrides.nowhere#lr: model x v1's configs/train.json "
                       r"has no id 'nowhere'"):  # fmt: skip
        check_against_bundle(config, spleen_bundle, "model x v1")
    nested = {"network_def#extra": {}, "network_def#extra#depth": 2}  # made by the one before
    check_against_bundle(parse_config({**GOOD, "overrides": nested}, "c"), spleen_bundle)


def test_run_length_is_capped_once_the_cases_are_known(spleen_bundle: Path) -> None:
    config = parse_config(_with("training", epochs=100_000, batch_size=1), "cfg.json")
    check_against_bundle(config, spleen_bundle, "model s v1", cases=100)
    with pytest.raises(XnatMlError, match=r"model s v1: 100000 epochs of 1000 iterations"):
        check_against_bundle(config, spleen_bundle, "model s v1", cases=1000)
    overridden = {**GOOD, "training": {"batch_size": 1},
                  "overrides": {"train::trainer::max_epochs": 100_000}}  # fmt: skip
    with pytest.raises(XnatMlError, match=r"100000 epochs of 1000 iterations"):
        check_against_bundle(parse_config(overridden, "c"), spleen_bundle, "m", cases=1000)


def test_card_overrides_are_plain_data() -> None:
    card = {"format": "xnat-ml-model-card", "name": "m", "version": "1", "task": "t",
            "labels": {"0": "background", "1": "a"}, "input_channels": ["image"],
            "overrides": {"network_def#out_channels": "$__import__('os').system('x')"}}  # fmt: skip
    with pytest.raises(
        XnatMlError, match=r"overrides.network_def#out_channels: .* starts with '\$'"
    ):
        parse_card(card, "model.json")


def test_digests_catch_changed_missing_and_added_files(tmp_path: Path) -> None:
    model = Path(shutil.copytree(TISSUES, tmp_path / "v1"))
    write_digests(model)
    recorded = json.loads((model / DIGESTS_FILE).read_text())
    assert recorded["algorithm"] == "sha256" and "configs/train.json" in recorded["files"]
    assert DIGESTS_FILE not in recorded["files"]
    check_version(model, "model tissues v1")
    (model / "claim.json").write_text("{}")  # the version's claim is not covered
    check_version(model, "model tissues v1")
    train = model / "configs" / "train.json"
    original = train.read_bytes()
    train.write_bytes(original.replace(b"{", b'{"x": "$exec(1)", ', 1))
    with pytest.raises(XnatMlError, match=r"^model tissues v1: configs/train.json differs from"):
        check_version(model, "model tissues v1")
    train.write_bytes(original)
    (model / "scripts").mkdir()
    (model / "scripts" / "__init__.py").write_text("open('MARK', 'w')\n")
    with pytest.raises(XnatMlError, match=r"scripts/__init__.py is not in digests.json"):
        check_version(model, "model tissues v1")
    shutil.rmtree(model / "scripts")
    (model / "configs" / "metadata.json").unlink()
    with pytest.raises(XnatMlError, match=r"configs/metadata.json is missing"):
        check_version(model, "model tissues v1")
    (model / DIGESTS_FILE).unlink()
    with pytest.raises(XnatMlError, match=r"has no digests.json \(installed by an older"):
        check_version(model, "model tissues v1")


def test_errors_name_the_model_not_the_folder(tmp_path: Path) -> None:
    model = Path(shutil.copytree(TISSUES, tmp_path / "tmp-xyz"))
    (model / "model.json").write_text('{"format": ')
    with pytest.raises(XnatMlError) as refused:
        read_card(model, "model tissues v1")
    assert str(refused.value).startswith("model tissues v1: model.json is not valid JSON")
    assert "tmp-xyz" not in str(refused.value)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[" * 100_000, "is nested deeper than 64 levels"),
        (json.dumps(_with("training", epochs=1_000_000_000)), "training.epochs: must be at most"),
        (json.dumps(_with("resources", processes=1_000_000)), "resources.processes: must be at"),
        (json.dumps(_with("resources", memory_gb=1e300)), "resources.memory_gb: must be positive"),
        (json.dumps({**GOOD, "overrides": {"optimizer#lr": HOSTILE}}), "overrides.optimizer#lr"),
    ],
)
def test_config_validate_prints_one_line(tmp_path: Path, config: str, expected: str) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(config)
    done = subprocess.run([sys.executable, "-m", "xnat_ml", "config", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    error = done.stderr.strip()
    assert error.startswith("xnat-ml: error: ") and expected in error and "\n" not in error, error
