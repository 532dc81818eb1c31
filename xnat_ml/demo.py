"""`make demo` / `python -m xnat_ml.demo`: the whole loop on the embedded server, as a user runs it.

Starts `xnat-ml serve` (local backend) on ./demo-data and then goes through the REST API and the
Container Service, the calls any XNAT takes: the roi-to-mask subscription and the sample project
(each saved RTSTRUCT collection becomes a label map), a dataset split 8/2/2 by subject, the CPU
template installed and a config pushed, then the `train`, `promote` and `evaluate` commands
launched on the project and `infer` as a batch on the testing sessions (AI SEG collections). It
ends with a summary (Dice per label on the testing split, the dashboard URL, a REST line) and
stops the server unless `--keep-serving`. A second run reuses what exists: no retraining while a
promoted model is there (`--retrain` trains again). A failed step ends it with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.server.process import ServerProcess

ADMIN = "admin"
TEMPLATE = "sample-tissues-cpu"  # the shipped config template and its bundle
MODEL = "tissues"  # the name the trained model is promoted as
DATASET = "tissues"
CONFIG = "demo"
# The template on 8 subjects with 2 idle cores, validation included (docs/training.md,
# Performance: 114 epochs in 585 s).
SECONDS_PER_EPOCH = 5.1
SUMMARY_FILE = "demo-summary.json"  # in the data folder: what the run did, for scripts and CI
DEFINITION = {
    "criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "T1w%", "ResourceLabel": "NIFTI"},
        "Labels": {"tag": "label", "Source": "roiCollection", "CollectionType": "RTSTRUCT"}}}],
    "split": {"training": 8, "validation": 2, "testing": 2, "seed": 0},
}  # fmt: skip
COMMANDS = ("train", "promote", "evaluate", "infer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xnat_ml.demo",
        description="Start the embedded XNAT server and run the whole loop on a sample project: "
        "label maps, dataset, training, evaluation, promotion, inference back to XNAT.",
    )
    parser.add_argument("--data", type=Path, default=Path("demo-data"),
                        help="archive folder (default ./demo-data; kept between runs)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--project", default="SAMPLE", help="sample project ID (default SAMPLE)")
    parser.add_argument("--subjects", type=int, default=12, help="sample subjects (default 12)")
    parser.add_argument(
        "--train-budget", type=float, default=300.0, metavar="S",
        help="training seconds on 2 idle cores (default 300), turned into epochs at "
        f"{SECONDS_PER_EPOCH} s each; a busy machine takes longer",
    )
    parser.add_argument("--retrain", action="store_true",
                        help="train and promote again although a promoted model exists")
    parser.add_argument("--keep-serving", action="store_true",
                        help="keep the server running after the summary, until Ctrl-C")
    args = parser.parse_args(argv)
    password = os.environ.get("XNAT_ML_ADMIN_PASSWORD", "admin")
    # `kill` ends the demo like Ctrl-C does, so the server child is stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run(args, password)
    except XnatMlError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def epochs_for(budget_s: float, val_interval: int) -> tuple[int, int]:
    """Epochs that fit the budget at SECONDS_PER_EPOCH, whole validation intervals of
    `val_interval` (a shorter interval when fewer epochs fit), and that interval."""
    epochs = max(1, round(budget_s / SECONDS_PER_EPOCH))
    if epochs < val_interval:
        return epochs, epochs
    return round(epochs / val_interval) * val_interval, val_interval


class Steps:
    """Each step's title and wall time; a failure names its step in one line."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, title: str) -> Iterator[None]:
        print(f"\n== {title}", flush=True)
        started = time.monotonic()
        try:
            yield
        except XnatMlError as exc:
            raise XnatMlError(f"{title}: {exc}") from None
        self.seconds[title] = round(time.monotonic() - started, 1)
        print(f"   ({self.seconds[title]:.0f} s)", flush=True)


def _bar(**kwargs: Any):
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, file=sys.stderr, **kwargs)


def _install_subscriptions(session, project: str) -> None:
    """What `xnat-ml events install --project P` does: the shipped subscriptions, wrappers on."""
    from xnat_ml.events.install import default_handlers, install_handler
    from xnat_ml.sample.project import ensure_project

    ensure_project(session, project)
    for handler in default_handlers():
        outcome = install_handler(session, project, handler)
        print(f"Event subscription {handler.document['name']!r}: {outcome}")


def _wait_for_jobs(
    session, project: str, before: set, new: int, timeout: float = 900
) -> list[dict]:
    """Poll the project's containers until `new` jobs beyond those in `before` (ids) exist and
    all of them ended; those jobs. Older jobs (a training the server resumed) are not waited for."""
    from xnat_ml.containers.jobs import FINAL_STATUSES

    deadline = time.monotonic() + timeout
    with _bar(total=new, desc="roi-to-mask jobs", unit="job") as bar:
        while True:
            jobs = [j for j in session.get_json("/xapi/containers", query={"project": project})
                    if j["id"] not in before]  # fmt: skip
            running = [j for j in jobs if j["status"] not in FINAL_STATUSES]
            bar.update(len(jobs) - len(running) - bar.n)
            if len(jobs) >= new and not running:
                return jobs
            if time.monotonic() > deadline:
                raise XnatMlError(
                    f"project {project}: {len(running)} roi-to-mask jobs still running after "
                    f"{timeout:.0f} s ({len(jobs)} of {new} launched)"
                )
            time.sleep(0.5)


def _report_jobs(session, jobs: list[dict]) -> None:
    """One line per job; a failed one stops the demo, naming its log's last line."""
    for job in sorted(jobs, key=lambda j: j["id"]):
        times = [float(event["time-recorded"]) / 1000 for event in job.get("history") or []]
        took = f" in {times[-1] - times[0]:.1f} s" if len(times) >= 2 else ""
        print(f"  job {job['id']} {job['wrapper-name']}: {job['status']}{took}")
    failed = [j for j in jobs if j["status"] != "Complete"]
    if failed:
        raise XnatMlError(_job_failure(session, failed[0]))


def _job_failure(session, job: dict) -> str:
    lines = session.get(f"/xapi/containers/{job['id']}/logs/stderr").text.strip().splitlines()
    last = lines[-1].strip() if lines else "empty"
    return (f"job {job['id']} ({job['wrapper-name']}): {job['status']}: "
            f"{job.get('message') or 'no message'}; its stderr ends: {last}")  # fmt: skip


def _enable_commands(session, project: str) -> dict:
    """The shipped commands the loop launches, installed (site admin) and enabled for the
    project, as an admin and an owner do on any XNAT; their wrappers by command name."""
    from xnat_ml.containers.installed import COMMAND_DIR, enable_wrapper, require_wrapper

    wrappers = {}
    for command in COMMANDS:
        wrapper = require_wrapper(session, command, install_from=COMMAND_DIR)
        enable_wrapper(session, project, wrapper)
        wrappers[command] = wrapper
    return wrappers


def _launch(session, project: str, wrapper, inputs: dict[str, str]) -> int:
    """Launch a project-level wrapper (the Container Service's launch call); the job id."""
    from xnat_ml.xnat.uris import segment

    uri = (f"/xapi/projects/{segment(project)}/wrappers/{wrapper.wrapper_id}/root/"
           f"{segment(wrapper.root_input)}/launch")  # fmt: skip
    body = {wrapper.root_input: f"/data/projects/{project}", **inputs}
    response = session.post(uri, json=body, accepted_status=list(range(200, 600)))
    try:
        answer = response.json()
    except ValueError:
        answer = {"message": response.text.strip()[:300]}
    if response.status_code >= 300 or answer.get("status") == "failure" or "id" not in answer:
        raise XnatMlError(f"launch of {wrapper.command_name}: refused ({response.status_code}: "
                          f"{answer.get('message') or 'no message'})")  # fmt: skip
    return int(answer["id"])


def _wait_job(session, job_id: int, tick: Callable[[], None] | None = None, every: float = 1.0,
              desc: str = "job") -> dict:  # fmt: skip
    """Poll a job until it ends; refuse one that did not complete. `tick` updates a bar."""
    from xnat_ml.containers.jobs import FINAL_STATUSES

    bar = None if tick else _bar(desc=desc, bar_format="{desc}: {elapsed} {postfix}")
    try:
        while True:
            job = session.get_json(f"/xapi/containers/{job_id}")
            if job["status"] in FINAL_STATUSES:
                break
            if tick:
                tick()
            else:
                bar.set_postfix_str(job["status"])
            time.sleep(every)
    finally:
        if bar is not None:
            bar.close()
    if job["status"] != "Complete":
        raise XnatMlError(_job_failure(session, job))
    print(f"  job {job_id} {job['wrapper-name']}: {job['status']}")
    return job


def _push_config(session, project: str, epochs: int, val_interval: int) -> None:
    """The template as a project config: its model and dataset, epochs for the budget."""
    from xnat_ml import scratch
    from xnat_ml.assets import shipped_dir
    from xnat_ml.training.config import load_config
    from xnat_ml.training.project_configs import check_references, push_config

    value = json.loads((shipped_dir("training_configs") / f"{TEMPLATE}.json").read_text())
    value["training"].update(epochs=epochs, val_interval=val_interval)
    value["model"], value["dataset"] = {"name": TEMPLATE, "version": ""}, {"name": DATASET,
                                                                           "version": ""}
    with scratch.temporary("demo-config-") as tmp:
        path = Path(tmp) / f"{CONFIG}.json"
        path.write_text(json.dumps(value, indent=2))
        check_references(session, project, load_config(path), f"config {CONFIG}")
        push_config(session, project, path)
    print(f"config {CONFIG}: {TEMPLATE} on dataset {DATASET}, {epochs} epochs")


def _train(session, project: str, wrappers: dict, epochs: int) -> str:
    """The train command on the project, its bar driven by the run's status.json; the run id."""
    from xnat_ml.containers.jobs import FINAL_STATUSES
    from xnat_ml.training.project_runs import run_status

    # A demo stopped during training: the restarted server resumed its job; follow that one.
    resumed = [j for j in session.get_json("/xapi/containers", query={"project": project})
               if j["wrapper-name"] == wrappers["train"].wrapper_name
               and j["status"] not in FINAL_STATUSES
               and re.search(r"--run-id (demo-\S+)", j.get("command-line") or "")]  # fmt: skip
    if resumed:
        job = int(resumed[0]["id"])
        run_id = re.search(r"--run-id (demo-\S+)", resumed[0]["command-line"])[1]
        print(f"run {run_id}: job {job}, resumed by the server: following it")
    else:
        run_id = f"demo-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        job = _launch(session, project, wrappers["train"], {"CONFIG": CONFIG, "RUN_ID": run_id})
        print(f"run {run_id}: job {job} (mirrored to ML_RUNS/{run_id}/)")
    with _bar(total=epochs, desc="train", unit="epoch") as bar:

        def tick() -> None:
            status = run_status(session, project, run_id) or {}
            bar.update(int(status.get("epoch") or 0) - bar.n)
            shown = {key: status[key] for key in ("iteration", "loss", "best_metric")
                     if status.get(key) is not None}  # fmt: skip
            if status.get("eta_s") is not None:
                shown["eta"] = f"{float(status['eta_s']):.0f}s"
            bar.set_postfix(shown, refresh=True)

        _wait_job(session, job, tick, every=3.0)
        tick()  # the final status: the bar ends where the run did
    status = run_status(session, project, run_id) or {}
    print(f"run {run_id}: {status.get('state')}, epoch {status.get('epoch')}, best validation "
          f"Dice {status.get('best_metric')} (epoch {status.get('best_epoch')})")  # fmt: skip
    return run_id


def _testing_sessions(session, project: str, version) -> list[str]:
    from xnat_ml.datasets.versions import DATALIST_FILE, read_json

    return [item["session"] for item in read_json(session, project, version, DATALIST_FILE)
            .get("testing", [])]  # fmt: skip


def _infer(session, project: str, model: str, sessions: list[str]) -> dict[str, str]:
    """`xnat-ml batch` of infer on the testing sessions without this model version's collection;
    {session label: collection label}."""
    from xnat_ml.containers.batch import Selection, run_batch
    from xnat_ml.imaging.ai_collections import ai_collection_label
    from xnat_ml.training.project_models import split_ref
    from xnat_ml.xnat import list_experiments, list_rows
    from xnat_ml.xnat.uris import experiment_uri

    name, number = split_ref("model", model)
    ids = {row["label"]: row["ID"] for row in list_experiments(session, project)}
    wanted = {label: ai_collection_label(name, number, label) for label in sessions}
    missing = [label for label in sessions if wanted[label] not in
               {a["label"] for a in list_rows(session, f"{experiment_uri(ids[label])}/assessors")}]
    if not missing:
        print(f"every testing session has its {model} collection: nothing to infer")
        return wanted
    _, attempt = run_batch(session, project, "infer", None, Selection(ids=tuple(missing)),
                           {"MODEL": model})  # fmt: skip
    refused = [item for item in attempt["items"] if item["error"]]
    if refused:
        raise XnatMlError(f"session {refused[0]['label']}: launch refused ({refused[0]['error']})")
    with _bar(total=len(missing), desc="infer", unit="session") as bar:
        for item in attempt["items"]:
            _wait_job(session, int(item["container"]), lambda: None)
            bar.update(1)
    return wanted


def _run(args: argparse.Namespace, password: str) -> int:
    from xnat_ml.datasets.project_build import build_in_project
    from xnat_ml.sample import build_sample_project
    from xnat_ml.training.derived import dice_summary, latest_evaluation
    from xnat_ml.training.project_models import install_model, list_models
    from xnat_ml.xnat import connect

    steps = Steps()
    started = time.monotonic()
    print(f"Starting the embedded XNAT server on {args.data} ...")
    with ServerProcess(args.data, port=args.port, admin_password=password) as server:
        url, project = server.url, args.project
        print(f"Server up at {url}")
        with connect(url, ADMIN, password) as session:
            with steps("sample project and label maps (roi-to-mask)"):
                _install_subscriptions(session, project)
                before = {j["id"] for j in
                          session.get_json("/xapi/containers", query={"project": project})}
                with _bar(total=args.subjects, desc="sample subjects", unit="subject") as bar:
                    built = build_sample_project(session, project, args.subjects,
                                                 progress=lambda _: bar.update(1))  # fmt: skip
                new = sum(1 for b in built if b.created)
                _report_jobs(session, _wait_for_jobs(session, project, before, new))
                print(f"project {project}: {len(built)} subjects ({new} new), label maps made")
            with steps("dataset (8/2/2 by subject)"):
                done = build_in_project(session, project, json.dumps(DEFINITION), DATASET)
                version = done.version or done.latest
                per_split = done.build.report["summary"]["perSplit"]
                print(f"dataset {DATASET} v{version.number}: "
                      + ("unchanged; " if done.unchanged else "written; ")
                      + ", ".join(f"{k} {v}" for k, v in sorted(per_split.items())))  # fmt: skip
                if empty := done.build.empty_splits():
                    raise XnatMlError(f"dataset {DATASET}: no subject in split "
                                      f"{', '.join(empty)} (needs --subjects 12 or more)")
            with steps("model and training config"):
                if TEMPLATE not in list_models(session, project):
                    from xnat_ml.assets import shipped_dir

                    install_model(session, project, shipped_dir("training_configs") / TEMPLATE,
                                  TEMPLATE)  # fmt: skip
                print(f"model {TEMPLATE} v{list_models(session, project)[TEMPLATE][-1]}: the "
                      "template's bundle, initial weights")  # fmt: skip
                epochs, val_interval = epochs_for(args.train_budget, 4)
                _push_config(session, project, epochs, val_interval)
                wrappers = _enable_commands(session, project)
            run_id = None
            promoted = list_models(session, project).get(MODEL)
            if promoted and not args.retrain:
                print(f"\nmodel {MODEL} v{promoted[-1]} is already promoted: no training "
                      "(--retrain trains again)")  # fmt: skip
            else:
                with steps(f"train ({epochs} epochs, about {args.train_budget:.0f} s)"):
                    run_id = _train(session, project, wrappers, epochs)
                with steps("promote the best checkpoint"):
                    _wait_job(session, _launch(session, project, wrappers["promote"],
                                               {"RUN": run_id, "NAME": MODEL}), desc="promote")
            number = list_models(session, project)[MODEL][-1]
            model = f"{MODEL}:{number}"
            with steps(f"evaluate {model} on the testing split"):
                evaluation = latest_evaluation(session, project, MODEL, number)
                wanted = f"{DATASET}:{version.number}"
                if evaluation is None or dice_summary(evaluation)["dataset"] != wanted:
                    _wait_job(session, _launch(session, project, wrappers["evaluate"],
                                               {"MODEL": model, "DATASET": wanted}),
                              desc="evaluate")  # fmt: skip
                    evaluation = latest_evaluation(session, project, MODEL, number)
                    if evaluation is None:
                        raise XnatMlError(f"model {model}: the evaluate job stored no metrics")
                else:
                    print(f"{model} was evaluated on {wanted} already")
            testing = _testing_sessions(session, project, version)
            with steps(f"infer {model} on the {len(testing)} testing sessions"):
                collections = _infer(session, project, model, testing)
            pull = _pull_line(session, url, project, testing, collections)
        summary = {
            "url": url, "project": project, "dataset": f"{DATASET}:{version.number}",
            "model": model, "run": run_id, "epochs": epochs, "testing_sessions": testing,
            "collections": collections, "dice": dice_summary(evaluation),
            "steps_s": steps.seconds, "total_s": round(time.monotonic() - started, 1),
            "load": list(os.getloadavg()), "cpus": os.cpu_count(),
        }  # fmt: skip
        (args.data / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        print(_summary_text(summary, pull, args))
        if args.keep_serving:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("\nStopping the server.")
    return 0


def _pull_line(session, url: str, project: str, testing: list[str], collections: dict) -> str:
    """A curl line fetching the first testing session's AI label map over XNAT's REST API."""
    from xnat_ml.layout import LABELMAP_RESOURCE
    from xnat_ml.xnat import list_experiments, list_rows
    from xnat_ml.xnat.uris import experiment_uri

    ids = {row["label"]: row["ID"] for row in list_experiments(session, project)}
    first = testing[0]
    uri = experiment_uri(ids[first])
    [assessor] = [a for a in list_rows(session, f"{uri}/assessors")
                  if a["label"] == collections[first]]  # fmt: skip
    return (f"curl -u {ADMIN} -o labels.zip '{url}{uri}/assessors/{assessor['ID']}/resources/"
            f"{LABELMAP_RESOURCE}/files?format=zip'")  # fmt: skip


def _summary_text(summary: dict, pull: str, args: argparse.Namespace) -> str:
    dice = summary["dice"]
    lines = ["", "== Summary", f"Done in {summary['total_s']:.0f} s (load "
             f"{summary['load'][0]:.1f} on {summary['cpus']} cores):"]  # fmt: skip
    lines += [f"  {seconds:6.0f} s  {title}" for title, seconds in summary["steps_s"].items()]
    lines += ["", f"Dice of {summary['model']} on the testing split of dataset "
              f"{dice['dataset']} ({dice['cases']} sessions, stored beside the model version):"]
    lines += [f"  {name:<14} {value:.4f}" for name, value in dice["dice"].items()]
    lines += [f"  {'mean':<14} {dice['mean_dice']:.4f}", "",
              "AI SEG collections (OHIF shows them over the T1w): "
              + ", ".join(summary["collections"].values()),
              f"Dashboard: {summary['url']}/ml/  (user {ADMIN})",
              f"Pull a result over REST (any XNAT takes the same URL):\n  {pull}", ""]
    if args.keep_serving:
        lines.append("The server keeps running until Ctrl-C.")
    else:
        lines.append("The server stops now; `python -m xnat_ml.demo --keep-serving` keeps it "
                     f"running, or serve the archive with `xnat-ml serve --data {args.data} "
                     "--port 8080`.")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
