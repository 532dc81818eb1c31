"""`xnat-ml model evaluate` and `model export`, added to training's `model` group (verb modules
load in order; docs/inference.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xnat_ml.cli import verb_group
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# xnatpy, torch and MONAI are imported inside the handlers.


def register(subparsers: argparse._SubParsersAction) -> None:
    verbs = verb_group(subparsers, "model")
    evaluate = verbs.add_parser(
        "evaluate", help="score a model version on a dataset split; store the scores beside it",
        description="Runs the model (as `xnat-ml infer` does) on every case of the dataset "
        "version's split and scores it in the source grid per case and label: Dice, HD95 (mm), "
        "volume difference (ml), and the mean per label. metrics.json, metrics.md and dice.png "
        "go to ML_MODELS/NAME/vN.derived/evaluations/DATASET-vM-SPLIT/ (never into the "
        "write-once version); the table is printed. Members and Owners.",
    )  # fmt: skip
    _model_ref(evaluate)
    evaluate.add_argument("--dataset", required=True, metavar="NAME[:N]",
                          help="dataset version in ML_DATASETS (default version: its latest)")
    evaluate.add_argument("--split", default="testing",
                          choices=("testing", "validation", "training"),
                          help="the split scored (default: testing)")  # fmt: skip
    evaluate.add_argument("--cache", type=Path, metavar="DIR",
                          help="dataset cache root, as for `dataset fetch` "
                          "(default ~/.cache/xnat-ml)")  # fmt: skip
    evaluate.set_defaults(func=_evaluate)

    export = verbs.add_parser(
        "export", help="store a model version's network as TorchScript beside it",
        description="Writes model.ts (TorchScript, the bundle's metadata.json and inference.json "
        "inside, as Model Zoo bundles ship it), checked for equal outputs on a sample input, "
        "and export.json (the check's input shape and largest difference) to "
        "ML_MODELS/NAME/vN.derived/export/. Members and Owners.",
    )  # fmt: skip
    _model_ref(export)
    export.set_defaults(func=_export)


def _model_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME[:N]", help="model version (default: its latest)")
    parser.add_argument("--project", required=True, metavar="P", help="project id")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    add_connection_arguments(parser)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _evaluate(args: argparse.Namespace) -> int:
    from xnat_ml.inference.evaluation import METRICS_FILE, PLOT_FILE, TABLE_FILE, markdown_table
    from xnat_ml.inference.project_evaluate import evaluate_in_project
    from xnat_ml.training.project_models import split_ref
    from xnat_ml.xnat.roles import require_role

    model, dataset = split_ref("model", args.model), split_ref("dataset", args.dataset)
    with connect_from_args(args) as session:
        require_role(session, args.project, "Member", "model evaluate")
        stored = evaluate_in_project(session, args.project, model, dataset, args.split,
                                     device=_device(args.device), cache=args.cache)  # fmt: skip
    print(markdown_table(stored.record), end="")
    print(f"project {args.project} ML_MODELS/{stored.folder}/: {METRICS_FILE}, {TABLE_FILE}, "
          f"{PLOT_FILE} stored")  # fmt: skip
    return 0


def _export(args: argparse.Namespace) -> int:
    from xnat_ml.inference.project_evaluate import export_in_project
    from xnat_ml.training.project_models import split_ref
    from xnat_ml.xnat.roles import require_role

    model = split_ref("model", args.model)
    with connect_from_args(args) as session:
        require_role(session, args.project, "Member", "model export")
        stored = export_in_project(session, args.project, model, device=_device(args.device))
    record = stored.record
    print(f"project {args.project} ML_MODELS/{stored.folder}/{record['file']}: stored "
          f"(checked on input {json.dumps(record['input_shape'])}, largest difference "
          f"{record['max_abs_difference']:.3g})")  # fmt: skip
    return 0
