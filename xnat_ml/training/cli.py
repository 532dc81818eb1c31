"""`xnat-ml model|config|train|finetune|promote|runs`: training in a project (docs/training.md)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from xnat_ml.cli import add_verb_group
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# xnatpy, torch and MONAI are imported inside the handlers: `xnat-ml` registers every verb
# module before dispatching.



def register(subparsers: argparse._SubParsersAction) -> None:
    _register_model(subparsers)
    _register_config(subparsers)
    for verb, help_text in (
        ("train", "train a model on a dataset of the project, as a training config says"),
        ("finetune", "fine-tune a model version of the project (its weights are the start)"),
    ):
        parser = subparsers.add_parser(
            verb, help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. The config (ML_CONFIGS), model "
            "(ML_MODELS) and dataset (ML_DATASETS) versions are resolved and checked before "
            "any training; the run folder is mirrored to ML_RUNS/RUN_ID/. Relaunching a run "
            "id that did not complete resumes it from its latest.pt.",
        )  # fmt: skip
        _project(parser)
        parser.add_argument("--config", required=True, metavar="NAME",
                            help="training config in the project's ML_CONFIGS")  # fmt: skip
        if verb == "finetune":
            parser.add_argument(
                "--from", "--model", dest="from_model", required=True, metavar="NAME[:N]",
                help="model version to start from, its bundle and weights, instead of the "
                "config's model (default version: the latest)",
            )  # fmt: skip
        else:
            parser.add_argument(
                "--model", metavar="NAME[:N]",
                help="model (bundle) to train instead of the config's (default version: the "
                "latest)",
            )  # fmt: skip
        parser.add_argument("--dataset", metavar="NAME[:VERSION]",
                            help="dataset instead of the config's")  # fmt: skip
        parser.add_argument("--run-id", metavar="ID", help="run id (default: CONFIG-timestamp)")
        parser.add_argument(
            "--work-dir",
            type=Path,
            metavar="DIR",
            help="local run folders and data (default ~/.cache/xnat-ml/work)",
        )
        parser.add_argument(
            "--cache",
            type=Path,
            metavar="DIR",
            help="dataset cache root, as for `dataset fetch` (default ~/.cache/xnat-ml)",
        )
        parser.set_defaults(func=_train)

    promote = subparsers.add_parser(
        "promote", help="make a completed run's best weights a new model version",
        description="The run's model.pt becomes ML_MODELS/NAME/vN/ (N the next number claimed "
        "on the server) with the run's bundle as published and a card naming the parent model "
        "version, the run, the dataset version and the metrics.",
    )  # fmt: skip
    promote.add_argument("run", metavar="RUN")
    _project(promote)
    promote.add_argument("--name", required=True, help="model name")
    promote.add_argument("--task", help="task text for the card (default: the parent's)")
    promote.set_defaults(func=_promote)
    _register_runs(subparsers)


def _project(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, metavar="P", help="project id")
    add_connection_arguments(parser)


def _register_model(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers, "model", help="install, list, show and pull models of a project",
        description="Models: MONAI bundles with a label map and a model card, stored as "
        "versions in the project resource ML_MODELS (NAME/vN/).",
    )  # fmt: skip
    install = verbs.add_parser(
        "install", help="validate a bundle (folder or zip) and store it as the next version",
        description="Checks the bundle (configs parse, required ids present, no symbolic links, "
        "within the size caps; a zip's members are checked before extraction), adds model.json, "
        "the label map and digests.json (what every job checks before it runs the bundle), and "
        "uploads the folder in one atomic upload. Nothing is uploaded when a check fails.",
    )  # fmt: skip
    install.add_argument("source", type=Path, metavar="DIR_OR_ZIP")
    _project(install)
    install.add_argument("--name", required=True, help="model name")
    install.add_argument(
        "--labelmap",
        type=Path,
        metavar="FILE",
        help="label map (Name=value lines or JSON); default: the bundle's",
    )
    install.add_argument(
        "--paint",
        metavar="CHANNEL=VALUE,...",
        help="a region model's rule: its binary output channels painted as label values, in "
        "order, later pairs winning (BraTS TC/WT/ET: 1=2,0=1,2=4)",
    )
    install.set_defaults(func=_model_install)

    listing = verbs.add_parser("list", help="list the models and their versions")
    _project(listing)
    listing.set_defaults(func=_model_list)

    show = verbs.add_parser(
        "show", help="print a version's model card (lineage included) and latest testing Dice",
    )  # fmt: skip
    show.add_argument("name", metavar="NAME")
    _project(show)
    show.add_argument("--version", metavar="N", help="version (default: latest)")
    show.set_defaults(func=_model_show)

    pull = verbs.add_parser("pull", help="download a model version into a folder")
    pull.add_argument("name", metavar="NAME")
    _project(pull)
    pull.add_argument("--version", metavar="N", help="version (default: latest)")
    pull.add_argument("--to", required=True, type=Path, metavar="DIR",
                      help="destination (must not exist)")  # fmt: skip
    pull.set_defaults(func=_model_pull)

    remove = verbs.add_parser(
        "delete", help="delete one model version (Owners)",
        description="Deletes ML_MODELS/NAME/vN/ as a whole (versions are write-once: no file "
        "of a version is replaced or removed alone). Runs and datasets are kept.",
    )  # fmt: skip
    remove.add_argument("ref", metavar="NAME:N", help="model name and version, e.g. tissues:2")
    _project(remove)
    remove.set_defaults(func=_model_delete)


def _register_config(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers, "config", help="check, push and list training configs",
        description="Training configs (docs/training.md), stored per project in ML_CONFIGS.",
    )  # fmt: skip
    validate = verbs.add_parser("validate", help="check a training config file (offline)")
    validate.add_argument("file", type=Path, metavar="FILE")
    validate.set_defaults(func=_config_validate)

    push = verbs.add_parser("push", help="check a config and store it as ML_CONFIGS/NAME.json")
    push.add_argument("file", type=Path, metavar="FILE")
    _project(push)
    push.add_argument("--name", help="config name (default: the file name without .json)")
    push.set_defaults(func=_config_push)

    listing = verbs.add_parser("list", help="list the project's training configs")
    _project(listing)
    listing.set_defaults(func=_config_list)

    templates = verbs.add_parser(
        "templates", help="list the config templates shipped with xnat-ml",
        description="Each template's config file and the model folder (bundle) it trains, to "
        "install with `xnat-ml model install` and push with `xnat-ml config push`.",
    )  # fmt: skip
    templates.set_defaults(func=_config_templates)


def _register_runs(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers, "runs", help="list, show and follow training runs; open TensorBoard",
        description="Runs mirrored to the project resource ML_RUNS (RUN_ID/).",
    )  # fmt: skip
    listing = verbs.add_parser("list", help="list the runs with their state")
    _project(listing)
    listing.set_defaults(func=_runs_list)

    show = verbs.add_parser("show", help="print a run's record and status")
    show.add_argument("run", metavar="RUN")
    _project(show)
    show.set_defaults(func=_runs_show)

    follow = verbs.add_parser(
        "follow", help="show a run's progress bar (iterations, loss, metric, ETA) until it ends",
        description="Polls the run's status.json in ML_RUNS (updated every few seconds while "
        "it trains); prints the final state and exits 1 when the run did not complete.",
    )  # fmt: skip
    follow.add_argument("run", metavar="RUN")
    _project(follow)
    follow.add_argument("--interval", type=float, default=5.0, metavar="S",
                        help="seconds between polls (default 5)")  # fmt: skip
    follow.set_defaults(func=_runs_follow)

    board = verbs.add_parser(
        "tensorboard", help="fetch a run's TensorBoard events and start TensorBoard on them",
    )  # fmt: skip
    board.add_argument("run", metavar="RUN")
    _project(board)
    board.add_argument("--port", type=int, default=6006, help="port (default 6006)")
    board.add_argument(
        "--to",
        type=Path,
        metavar="DIR",
        help="where the events go (default ~/.cache/xnat-ml/tensorboard/P/RUN)",
    )
    board.add_argument(
        "--dry-run",
        action="store_true",
        help="fetch the events and print the command, start nothing",
    )
    board.set_defaults(func=_runs_tensorboard)


def _model_install(args: argparse.Namespace) -> int:
    from xnat_ml.training.model import parse_paint
    from xnat_ml.training.project_models import install_model
    from xnat_ml.xnat.roles import require_role

    output = parse_paint(args.paint) if args.paint else None
    with connect_from_args(args) as session:
        require_role(session, args.project, "Owner", "model install")
        number, card = install_model(session, args.project, args.source, args.name,
                                     args.labelmap, output)  # fmt: skip
    labels = ", ".join(f"{v} {n}" for v, n in sorted(card.labels.items()) if v)
    print(f"project {args.project} ML_MODELS/{args.name}/v{number}: installed ({labels})")
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_models import list_models

    with connect_from_args(args) as session:
        models = list_models(session, args.project)
    if not models:
        print(f"project {args.project}: no models")
    for name, numbers in models.items():
        print(f"{name}: " + ", ".join(f"v{n}" for n in numbers))
    return 0


def _model_show(args: argparse.Namespace) -> int:
    from xnat_ml.training.derived import dice_summary, latest_evaluation
    from xnat_ml.training.project_models import find_model, parse_version, read_model_card

    with connect_from_args(args) as session:
        number = find_model(session, args.project, args.name,
                            parse_version(f"model {args.name}", args.version))  # fmt: skip
        card = read_model_card(session, args.project, args.name, number)
        evaluation = latest_evaluation(session, args.project, args.name, number)
    shown = card.to_json()
    if evaluation is not None:  # beside the card: from ML_MODELS/NAME/vN.derived/evaluations/
        shown["latest_testing"] = dice_summary(evaluation)
    print(json.dumps(shown, indent=2))
    return 0


def _model_pull(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_models import find_model, parse_version, pull_model

    with connect_from_args(args) as session:
        number = find_model(session, args.project, args.name,
                            parse_version(f"model {args.name}", args.version))  # fmt: skip
        pull_model(session, args.project, args.name, number, args.to)
    print(f"{args.to}: model {args.name} v{number}")
    return 0


def _model_delete(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_models import delete_model, find_model, split_ref
    from xnat_ml.xnat.roles import require_role

    name, number = split_ref("model", args.ref)
    if number is None:
        raise XnatMlError(f"model {name}: name the version to delete ({name}:N)")
    with connect_from_args(args) as session:
        require_role(session, args.project, "Owner", "model delete")
        delete_model(session, args.project, name, find_model(session, args.project, name, number))
    print(f"project {args.project} ML_MODELS/{name}/v{number}: deleted")
    return 0


def _config_validate(args: argparse.Namespace) -> int:
    from xnat_ml.training.config import load_config

    config = load_config(args.file)
    print(f"{args.file}: valid (model {config.model.name}, dataset {config.dataset.name})")
    return 0


def _config_push(args: argparse.Namespace) -> int:
    from xnat_ml.training.config import load_config
    from xnat_ml.training.project_configs import check_references, push_config
    from xnat_ml.xnat.roles import require_role

    config = load_config(args.file)  # a bad file is refused before any login
    with connect_from_args(args) as session:
        require_role(session, args.project, "Owner", "config push")
        check_references(session, args.project, config, f"config {args.file}")
        name = push_config(session, args.project, args.file, args.name)
    print(f"project {args.project} ML_CONFIGS/{name}.json: stored")
    return 0


def _config_list(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_configs import list_configs

    with connect_from_args(args) as session:
        names = list_configs(session, args.project)
    print("\n".join(names) if names else f"project {args.project}: no training configs")
    return 0


def _config_templates(args: argparse.Namespace) -> int:
    from xnat_ml.assets import shipped_dir

    folder = shipped_dir("training_configs")
    configs = sorted(folder.glob("*.json"))
    if not configs:
        raise XnatMlError(f"training config templates: none in {folder}")
    for config in configs:
        print(f"{config.stem}: config {config}, model {folder / config.stem}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_train import DEFAULT_WORK, TrainRequest, train_in_project
    from xnat_ml.xnat.roles import require_role

    request = TrainRequest(
        project=args.project, config=args.config, run_id=args.run_id,
        from_model=getattr(args, "from_model", None), model=getattr(args, "model", None),
        dataset=args.dataset,
        work_dir=args.work_dir or DEFAULT_WORK,
    )  # fmt: skip
    if args.cache:
        request.cache = args.cache
    verb = "finetune" if request.from_model else "train"
    with connect_from_args(args) as session:
        require_role(session, args.project, "Member", verb)
        status = train_in_project(session, request)
    print(_status_line(status))
    return 0 if status.get("state") == "completed" else 1


def _promote(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_train import promote_in_project
    from xnat_ml.xnat.roles import require_role

    with connect_from_args(args) as session:
        require_role(session, args.project, "Owner", "promote")
        number, card = promote_in_project(session, args.project, args.run, args.name, args.task)
    parent = f"{card.parent.name} v{card.parent.version}" if card.parent else "none"
    print(f"project {args.project} ML_MODELS/{args.name}/v{number}: promoted from run "
          f"{args.run} (parent {parent}, metrics {card.metrics})")  # fmt: skip
    return 0


def _status_line(status: dict[str, Any]) -> str:
    parts = [f"run {status.get('run')}: {status.get('state')}",
             f"epoch {status.get('epoch')}/{status.get('max_epochs')}"]  # fmt: skip
    if status.get("loss") is not None:
        parts.append(f"loss {status['loss']}")
    if status.get("best_metric") is not None:
        parts.append(f"best {status.get('metric_name')} {status['best_metric']} "
                     f"(epoch {status.get('best_epoch')})")  # fmt: skip
    if status.get("message"):
        parts.append(str(status["message"]))
    return ", ".join(parts)


def _runs_list(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_runs import list_runs, read_run_json

    with connect_from_args(args) as session:
        runs = list_runs(session, args.project)
        if not runs:
            print(f"project {args.project}: no runs")
        for run in runs:
            print(_status_line(read_run_json(session, args.project, run, "status.json")))
    return 0


def _runs_show(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_runs import read_run_json, run_status

    with connect_from_args(args) as session:
        status = run_status(session, args.project, args.run)
        if status is None:
            raise XnatMlError(f"run {args.run}: not in project {args.project}'s ML_RUNS")
        record = read_run_json(session, args.project, args.run, "run.json")
    shown = {key: record.get(key) for key in ("model", "parent", "finetune", "dataset", "seed",
                                               "created", "versions")}  # fmt: skip
    print(json.dumps({"run": args.run, "status": status, "record": shown}, indent=2))
    return 0


def _runs_follow(args: argparse.Namespace) -> int:
    from xnat_ml.training.follow import follow_run
    from xnat_ml.training.project_runs import run_status

    with connect_from_args(args) as session:
        def read() -> dict[str, Any]:
            status = run_status(session, args.project, args.run)
            if status is None:
                raise XnatMlError(f"run {args.run}: not in project {args.project}'s ML_RUNS")
            return status

        status = follow_run(read, args.run, args.interval)
    print(_status_line(status), flush=True)
    return 0 if status["state"] == "completed" else 1


def _runs_tensorboard(args: argparse.Namespace) -> int:
    from xnat_ml.training.project_runs import pull_run
    from xnat_ml.training.run_folder import TENSORBOARD_DIR

    dest = args.to or Path.home() / ".cache" / "xnat-ml" / "tensorboard" / args.project / args.run
    with connect_from_args(args) as session:
        files = pull_run(session, args.project, args.run, dest, only=(f"{TENSORBOARD_DIR}/",))
    if not files:
        raise XnatMlError(f"run {args.run}: has no TensorBoard events in ML_RUNS yet")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(dest / TENSORBOARD_DIR),
               "--port", str(args.port), "--host", "127.0.0.1"]  # fmt: skip
    print(" ".join(command), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(command)
