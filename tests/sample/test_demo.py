"""`make demo` runs `python -m xnat_ml.demo`: the whole loop, once per test session (the
`demo_loop` fixture, tests/demo_loop.py). Here: what it printed and stored, the server stopped on
exit, a second run that reuses everything, and a step that fails in one line."""

from __future__ import annotations

import re
import socket

import pytest
from demo_loop import DEMO_TIMEOUT_S

from xnat_ml.demo import DATASET, MODEL, SUMMARY_FILE

STEPS = ("sample project and label maps (roi-to-mask)", "dataset (8/2/2 by subject)",
         "model and training config")  # fmt: skip


@pytest.mark.timeout(DEMO_TIMEOUT_S)
def test_demo_runs_the_whole_loop_and_prints_a_summary(demo_loop):
    if not demo_loop.first_run:
        pytest.skip("XNAT_ML_DEMO_DATA: the demo's first run happened elsewhere")
    out, summary = demo_loop.stdout, demo_loop.summary
    assert "': created" in out and "project SAMPLE: 12 subjects (12 new), label maps made" in out
    assert f"dataset {DATASET} v1: written; testing 2, training 8, validation 2" in out
    assert re.search(r"run demo-[\d-]+: completed, epoch \d+, best validation Dice 0\.\d+", out)
    assert re.search(r"job \d+ promote-project: Complete", out)
    assert re.search(r"job \d+ evaluate-project: Complete", out)
    assert len(re.findall(r"job \d+ infer-session: Complete", out)) == 2
    # the summary: steps with their times, Dice per label and mean, dashboard, a REST line
    assert list(summary["steps_s"])[:3] == list(STEPS) and len(summary["steps_s"]) == 7
    assert summary["model"] == f"{MODEL}:1" and summary["dataset"] == f"{DATASET}:1"
    dice = summary["dice"]
    assert set(dice["dice"]) == {"Grey Matter", "White Matter"} and dice["cases"] == 2
    for name, value in dice["dice"].items():
        assert re.search(rf"  {name} +{value:.4f}", out), out[-2000:]
    assert f"  mean           {dice['mean_dice']:.4f}" in out
    assert f"Dashboard: {summary['url']}/ml/" in out
    assert re.search(r"curl -u admin -o labels\.zip 'http://127\.0\.0\.1:\d+/data/experiments/"
                     r"\w+/assessors/\w+/resources/LABELMAP/files\?format=zip'", out)  # fmt: skip
    assert sorted(summary["collections"]) == sorted(summary["testing_sessions"])
    assert all(c.startswith(f"AI_{MODEL}_v1_") for c in summary["collections"].values())
    # tqdm bars on stderr: sample subjects, roi-to-mask jobs, training epochs, inference
    for bar in ("sample subjects: 100%", "roi-to-mask jobs: 100%", "train: 100%", "infer: 100%"):
        assert bar in demo_loop.stderr, demo_loop.stderr[-2000:]
    port = int(summary["url"].rsplit(":", 1)[1])
    with socket.socket() as probe:  # the server was stopped on exit
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.timeout(DEMO_TIMEOUT_S)
def test_a_second_run_reuses_everything_and_a_failed_step_is_one_line(demo_loop):
    again = demo_loop.run_again()
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout
    assert "project SAMPLE: 12 subjects (0 new), label maps made" in out
    assert f"dataset {DATASET} v1: unchanged" in out
    assert f"model {MODEL} v1 is already promoted: no training (--retrain trains again)" in out
    assert f"{MODEL}:1 was evaluated on {DATASET}:1 already" in out
    assert f"every testing session has its {MODEL}:1 collection: nothing to infer" in out
    assert "job " not in out.split("== dataset")[1]  # nothing launched after the sample step
    assert (demo_loop.data / SUMMARY_FILE).is_file()
    # too few subjects for an 8/2/2 split: the dataset step stops the demo in one line
    failed = demo_loop.run_again("--project", "TWO", "--subjects", "2")
    assert failed.returncode == 1
    [line] = [x for x in failed.stderr.splitlines() if x.startswith("demo: error:")]
    assert line == ("demo: error: dataset (8/2/2 by subject): dataset tissues: no subject in "
                    "split validation, testing (needs --subjects 12 or more)"), failed.stderr
