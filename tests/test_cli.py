"""The `xnat-ml` dispatcher: a verb module that cannot be imported stops the command loudly."""

from __future__ import annotations

import pytest

from xnat_ml import cli


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import xnat_ml_no_such_dependency\n", "ModuleNotFoundError"),
        ("def register(subparsers:\n", "SyntaxError"),
        ("raise RuntimeError('broken at import')\n", "RuntimeError: broken at import"),
    ],
)
def test_a_verb_module_that_fails_to_import_is_named_in_one_line(
    tmp_path, monkeypatch, capsys, source, error
):
    (tmp_path / "broken_verbs.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "VERB_MODULES", (*cli.VERB_MODULES, "broken_verbs"))
    assert cli.main(["serve", "--help"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    [line] = out.err.splitlines()
    assert line.startswith("xnat-ml: error: cannot load the verbs of broken_verbs (")
    assert error in line


def test_every_shipped_verb_module_loads():
    verbs = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"serve", "sample-data", "convert", "commands", "batch", "events", "roi-to-mask"} <= set(
        verbs
    )


def test_sample_data_defaults_to_twelve_subjects():
    """Enough for an 8/2/2 split by subject: a smaller default left the testing split empty."""
    args = cli.build_parser().parse_args(["sample-data"])
    assert args.subjects == 12
