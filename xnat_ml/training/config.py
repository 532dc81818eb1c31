"""Training configs: which model, which dataset, how long and how, on what resources.

A strict reader (unknown fields and wrong types are one-line errors naming the field), and the
translation of its ``training`` settings into the bundle's own ids. Values stay typed: MONAI's
command line turns ``false`` into a truthy string, so xnat-ml hands them to ``ConfigWorkflow``
in-process.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.training import limits
from xnat_ml.training.bundle import TRAIN_CONFIG, has_id, read_json_file
from xnat_ml.training.fields import Fields
from xnat_ml.training.literals import check_overrides
from xnat_ml.training.model import Ref

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")

# Each setting goes to every one of these bundle ids that the bundle has; a setting none of whose
# ids the bundle has is an error (use a free-form override with the bundle's own id instead).
SETTING_IDS: dict[str, tuple[str, ...]] = {
    "epochs": ("epochs", "train#trainer#max_epochs"),
    "learning_rate": ("learning_rate", "optimizer#lr"),
    "batch_size": ("batch_size", "train#dataloader#batch_size"),
    "patch_size": ("patch_size", "train#random_transforms#0#spatial_size",
                   "validate#inferer#roi_size"),
    "val_interval": ("val_interval",),
    "amp": ("amp", "train#trainer#amp", "validate#evaluator#amp"),
    "workers": ("num_workers", "train#dataset#num_workers", "train#dataloader#num_workers",
                "validate#dataset#num_workers", "validate#dataloader#num_workers"),
    "cache_rate": ("cache_rate", "train#dataset#cache_rate", "validate#dataset#cache_rate"),
    "device": ("device",),
}  # fmt: skip
TOP_FIELDS = ("description", "model", "dataset", "training", "overrides", "resources")
RESOURCE_FIELDS = ("gpus", "cpus", "memory_gb", "processes")


@dataclass
class TrainingSettings:
    """The ``training`` section; None means: keep the bundle's value."""

    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    patch_size: list[int] | None = None
    val_interval: int | None = None
    amp: bool | None = None
    seed: int | None = None
    workers: int | None = None
    cache_rate: float | None = None
    device: str | None = None


@dataclass
class Resources:
    gpus: int = 0
    cpus: int = 1
    memory_gb: float | None = None
    processes: int = 1  # data-parallel training processes (DDP): one per GPU, or gloo on CPUs


@dataclass
class TrainingConfig:
    model: Ref
    dataset: Ref
    training: TrainingSettings = field(default_factory=TrainingSettings)
    overrides: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    description: str = ""

    def bundle_overrides(self, bundle_config: dict[str, Any], source: str) -> dict[str, Any]:
        """Bundle id -> typed value: the ``training`` settings first, free-form ``overrides``
        last (they win). ``bundle_config`` is the bundle's parsed train.json."""
        out: dict[str, Any] = {}
        for name, ids in SETTING_IDS.items():
            value = getattr(self.training, name)
            if value is None:
                continue
            if name == "device":
                value = f"$torch.device('{value}')"
            present = [i for i in ids if has_id(bundle_config, i)]
            if not present:
                raise XnatMlError(
                    f"training.{name}: {source} has none of the ids {', '.join(ids)}; "
                    "set the bundle's own id under overrides"
                )
            out.update(dict.fromkeys(present, value))
        out.update(self.overrides)
        return out


def _positive(fields: Fields, key: str, kind: type, minimum: float = 1,
              maximum: float | None = None) -> Any:  # fmt: skip
    value = fields.get(key, kind)
    if value is not None and value < minimum:
        raise XnatMlError(f"{fields.field(key)}: must be at least {minimum}")
    if value is not None and maximum is not None and value > maximum:
        raise XnatMlError(f"{fields.field(key)}: must be at most {maximum:g}")
    return value


def _settings(fields: Fields | None) -> TrainingSettings:
    if fields is None:
        return TrainingSettings()
    fields.only(TrainingSettings.__dataclass_fields__)
    patch = fields.get("patch_size", list)
    if patch is not None and (
        len(patch) not in (2, 3)
        or not all(type(p) is int and 0 < p <= limits.MAX_PATCH_SIZE for p in patch)
    ):
        raise XnatMlError(f"{fields.field('patch_size')}: expected 2 or 3 positive integers "
                          f"of at most {limits.MAX_PATCH_SIZE}")  # fmt: skip
    cache_rate = fields.get("cache_rate", float)
    if cache_rate is not None and not 0 <= cache_rate <= 1:
        raise XnatMlError(f"{fields.field('cache_rate')}: must be between 0 and 1")
    learning_rate = fields.get("learning_rate", float)
    if learning_rate is not None and not 0 < learning_rate <= limits.MAX_LEARNING_RATE:
        raise XnatMlError(f"{fields.field('learning_rate')}: must be positive and at most "
                          f"{limits.MAX_LEARNING_RATE:g}")  # fmt: skip
    seed = fields.get("seed", int)
    if seed is not None and not 0 <= seed < 2**32:
        raise XnatMlError(f"{fields.field('seed')}: must be between 0 and 2**32 - 1")
    device = fields.get("device", str)
    if device is not None and not _DEVICE.match(device):
        raise XnatMlError(f"{fields.field('device')}: expected cpu, cuda or cuda:N")
    return TrainingSettings(
        epochs=_positive(fields, "epochs", int, maximum=limits.MAX_EPOCHS),
        learning_rate=learning_rate,
        batch_size=_positive(fields, "batch_size", int, maximum=limits.MAX_BATCH_SIZE),
        patch_size=patch,
        val_interval=_positive(fields, "val_interval", int, maximum=limits.MAX_EPOCHS),
        amp=fields.get("amp", bool),
        seed=seed,
        workers=_positive(fields, "workers", int, 0, limits.MAX_WORKERS),
        cache_rate=cache_rate,
        device=device,
    )


def _resources(fields: Fields | None, device: str | None) -> Resources:
    """``processes`` defaults to one per GPU; several processes on GPUs take one GPU each."""
    if fields is None:
        return Resources()
    fields.only(RESOURCE_FIELDS)
    memory = fields.get("memory_gb", float)
    if memory is not None and not 0 < memory <= limits.MAX_MEMORY_GB:
        raise XnatMlError(f"{fields.field('memory_gb')}: must be positive and at most "
                          f"{limits.MAX_MEMORY_GB:g}")  # fmt: skip
    gpus = _positive(fields, "gpus", int, 0, limits.MAX_GPUS) or 0
    processes = _positive(fields, "processes", int, maximum=limits.MAX_PROCESSES) or max(gpus, 1)
    if processes > 1:
        if gpus and processes != gpus:
            raise XnatMlError(
                f"{fields.field('processes')}: {processes} processes on {gpus} GPUs; "
                "data-parallel training runs one process per GPU"
            )
        if device is not None and (device.startswith("cuda:") or (device == "cuda") != bool(gpus)):
            raise XnatMlError(
                f"{fields.source}: training.device: '{device}' does not fit {processes} processes "
                f"on {gpus} GPUs (use 'cuda' with one GPU per process, or 'cpu' without GPUs)"
            )
    return Resources(gpus=gpus, cpus=_positive(fields, "cpus", int, maximum=limits.MAX_CPUS) or 1,
                     memory_gb=memory, processes=processes)  # fmt: skip


def parse_config(value: Any, source: str) -> TrainingConfig:
    """A training config from parsed JSON; every error is one line naming the field.

    Override values are plain data (``literals.py``); an override of an epochs id is capped as
    ``training.epochs`` is."""
    fields = Fields(value, source)
    fields.only(TOP_FIELDS)
    overrides = fields.get("overrides", dict, default={})
    for key in overrides:
        if not key or key.startswith("#") or key.endswith("#"):
            raise XnatMlError(f"{fields.field('overrides')}: '{key}' is not a bundle id")
    check_overrides(overrides, fields.field("overrides"))
    for key, given in overrides.items():
        if key.replace("::", "#") in SETTING_IDS["epochs"] and isinstance(given, int | float) \
                and given > limits.MAX_EPOCHS:  # fmt: skip
            raise XnatMlError(f"{fields.field('overrides')}.{key}: must be at most "
                              f"{limits.MAX_EPOCHS}")  # fmt: skip
    return TrainingConfig(
        model=Ref.read(fields.sub("model", required=True)),
        dataset=Ref.read(fields.sub("dataset", required=True)),
        training=(training := _settings(fields.sub("training"))),
        overrides=overrides,
        resources=_resources(fields.sub("resources"), training.device),
        description=fields.get("description", str, default=""),
    )


def load_config(path: str | Path) -> TrainingConfig:
    """Read and check a training config file (``xnat-ml config validate FILE``)."""
    return parse_config(read_json_file(Path(path), "training config"), str(path))


def config_to_json(config: TrainingConfig) -> dict[str, Any]:
    """The config as JSON again, without unset settings (for the run's snapshot)."""
    data = asdict(config)
    data["training"] = {k: v for k, v in data["training"].items() if v is not None}
    if not data["description"]:
        del data["description"]
    return data


def check_against_bundle(
    config: TrainingConfig, bundle_dir: Path, label: str | None = None, cases: int | None = None
) -> dict[str, Any]:
    """The bundle overrides this config makes for the bundle in ``bundle_dir`` (``label`` names
    it in errors). An override whose parent id the bundle lacks is refused here, before a run
    exists; with ``cases`` (training cases) the run's length is checked against its cap."""
    what = label or f"bundle {bundle_dir}"
    train = read_json_file(bundle_dir / TRAIN_CONFIG, what, TRAIN_CONFIG if label else None)
    overrides = config.bundle_overrides(train, f"{what}: {TRAIN_CONFIG}" if label
                                        else str(bundle_dir / TRAIN_CONFIG))  # fmt: skip
    earlier: list[str] = []
    for given in config.overrides:
        config_id = given.replace("::", "#")
        parent = config_id.rpartition("#")[0]
        if (
            parent
            and not has_id(train, parent)
            and not any(parent == e or parent.startswith(f"{e}#") for e in earlier)
        ):
            raise XnatMlError(f"training config overrides.{given}: {what}'s {TRAIN_CONFIG} "
                              f"has no id '{parent}'")  # fmt: skip
        earlier.append(config_id)
    if cases is not None:
        _check_length(overrides, train, cases, what)
    return overrides


def _bundle_ints(overrides: dict[str, Any], train: Any, ids: tuple[str, ...]) -> list[int]:
    """The plain integers the run will have at ``ids`` (an override, else the bundle's own
    value); expressions and absent ids give none."""
    found = []
    for config_id in ids:
        if config_id in overrides:
            value = overrides[config_id]
        elif has_id(train, config_id):
            value = train
            for key in config_id.split("#"):
                value = value[int(key) if isinstance(value, list) else key]
        else:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            found.append(value)
    return found


def _check_length(overrides: dict[str, Any], train: Any, cases: int, what: str) -> None:
    """Epochs x iterations per epoch within ``MAX_ITERATIONS``, counted on the safe side (the
    largest epochs and the smallest batch the bundle's ids hold)."""
    overrides = {key.replace("::", "#"): value for key, value in overrides.items()}
    epochs = max(_bundle_ints(overrides, train, SETTING_IDS["epochs"]), default=None)
    if epochs is None:
        return
    batch = max(min(_bundle_ints(overrides, train, SETTING_IDS["batch_size"]), default=1), 1)
    per_epoch = max(-(-cases // batch), 1)
    if epochs * per_epoch > limits.MAX_ITERATIONS:
        raise XnatMlError(
            f"{what}: {epochs} epochs of {per_epoch} iterations ({epochs * per_epoch}) exceed the "
            f"cap of {limits.MAX_ITERATIONS} iterations a run"
        )
