"""Configuration flows one way: YAML → JSON-schema check → dataclasses → model.

A *grid* file (``config/*.yaml``) names datasets × models × seeds and the settings of each model; it is
checked against ``workflow/schemas/config.schema.yaml`` (shipped in the package as
``dgmbench/resources/config.schema.yaml``) and then against the registries and the dataclasses, so an unknown
model, dataset or key, or a value of the wrong type, stops with a message naming the field and the choices.

A *run* config is one (dataset, model, seed) resolved from the grid: family defaults < ``train.all`` <
``train.<model>`` < ``--set``.

*Variants* are named copies of a model with other settings, usable wherever a model name is (a β sweep of the
VAE, a learning-rate sensitivity sweep): ``variants: {vae-beta4: {model: vae, hparams: {beta: 4.0}}}``. A
variant inherits its base model's ``train``/``hparams`` sections, then applies its own. It is saved beside every result and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Invalid configuration; ``str()`` is the complete user-facing message."""


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages never print a whole (possibly huge) value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Largest integer any setting may hold: beyond it torch and numpy overflow (int32 sizes, int64 tensors).
MAX_INT = 2**31 - 1


# ------------------------------------------------------------------------------------------- dataclasses
def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a dataclass field type; returns (ok, coerced value). int → float is allowed."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        out = []
        for item in value:
            ok, v = _type_ok(item, item_tp)
            if not ok:
                return False, value
            out.append(v)
        return True, (tuple(out) if origin is tuple else out)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_dataclass(cls: type, values: dict[str, Any] | None, *, where: str):
    """Instantiate dataclass ``cls`` from ``values``, failing loudly on unknown keys or wrong types."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}; valid keys for {where}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        ok, coerced = _type_ok(value, hints[name])
        if not ok:
            raise ConfigError(
                f"{where}.{name} = {short(value)} has the wrong type: expected {_type_name(hints[name])}"
            )
        _check_number(f"{where}.{name}", coerced)
        kwargs[name] = coerced
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return obj


def _check_number(key: str, value: Any) -> None:
    """No setting is NaN or infinite (a NaN passes every ``x <= 0`` check), and no integer is large enough to
    overflow the libraries it reaches; lists are checked item by item."""
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_number(key, item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value} is not a finite number; give a finite value")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{key} = {short(value)} is out of range; give a value of magnitude at most {MAX_INT}")


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Settings of the shared trainer. Each family may change these defaults (``train_defaults``)."""

    batch_size: int = 64  # images per gradient step
    lr: float = 1e-3  # Adam learning rate (families with several optimisers scale from it)
    weight_decay: float = 0.0  # Adam L2 penalty
    max_epochs: int = 100  # the training budget, in passes over the training split
    patience: int = 20  # early stopping: epochs without validation improvement; 0 = off
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    checkpoint_every: int = 5  # epochs between resumable checkpoints (last.pt)
    num_train: int = 0  # use only the first n training images (smoke tests); 0 = all
    num_val: int = 0  # use only the first n validation images; 0 = all

    def validate(self):
        """Each setting in its real domain; NaN and ±inf fail every check (``not x > 0`` is true for NaN)."""
        for name in ("batch_size", "max_epochs"):
            if not 1 <= getattr(self, name) <= MAX_INT:
                raise ValueError(f"{name} must be ≥ 1 (and at most {MAX_INT}), got {getattr(self, name)}")
        for name in ("patience", "checkpoint_every", "num_train", "num_val"):
            if not 0 <= getattr(self, name) <= MAX_INT:
                raise ValueError(f"{name} must be ≥ 0 (and at most {MAX_INT}), got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0 (a finite number), got {self.lr}")
        # A negative clip norm scales the gradient by a negative factor: gradient ascent that reports "ok".
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0 (0 = off), got {getattr(self, name)}")


# ------------------------------------------------------------------------------------------------ grid
GRID_DEFAULTS: dict[str, Any] = {
    "datasets": ["digits"],
    "models": None,  # None = every registered model
    "seeds": [0, 1, 2],
    "runs_dir": "results/runs",
    "results_dir": "results",
    "device": "auto",
    "threads": 1,
    "data_root": None,
    "tracking_uri": None,
    "tracking_live": False,  # the workflow's jobs journal what they log; its last job writes it (journal.py)
    "experiment": "dgmbench",
    "train": {},
    "hparams": {},
    "eval": {},
    "variants": {},
    "data_files": {},  # datasets read from the grid's own .npz files or PNG folders (datafiles.py)
}

MAX_SEED = 2**32  # seeds are 0 ≤ seed < 2^32 (numpy's seed width): distinct seeds never share a stream

RUN_KEYS = ("device", "threads", "data_root", "tracking_uri", "experiment")


def schema_path() -> Path:
    return Path(str(resources.files("dgmbench") / "resources" / "config.schema.yaml"))


def load_schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def _schema_errors(cfg: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        raise ConfigError(f"unknown key {short(extra[0])} in {where}; valid keys: {', '.join(allowed)}")
    raise ConfigError(f"config field {where}: {err.message[:300]}")


# A grid file is small: these bound what a hostile one can cost before it is rejected (a YAML "billion laughs"
# is a few hundred bytes whose aliases expand to 10^9 nodes; safe_load shares them, but anything that walks the
# result — the schema check, json.dumps, an error message's repr — expands them).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000


def _expanded_size(node, sizes: dict, active: set) -> int:
    """Number of YAML nodes ``node`` stands for once every alias is expanded (memoised per node)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise ConfigError("recursive alias")
    active.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, active)
        if total > MAX_CONFIG_NODES:
            break
    active.discard(key)
    sizes[key] = total
    return total


def parse_yaml_text(text: str, source: str) -> dict:
    """Parse a config's text (YAML or JSON) into a mapping, bounded in size and in alias expansion."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes; a dgmbench config is a few kilobytes")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        try:
            size = _expanded_size(root, {}, set()) if root is not None else 0
        except ConfigError:
            raise ConfigError(f"{source} has a recursive YAML alias; write the values out") from None
        if size > MAX_CONFIG_NODES:
            raise ConfigError(f"{source} expands to more than {MAX_CONFIG_NODES} values (YAML aliases); "
                              "write the values out or use fewer aliases")
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, RecursionError) as err:
        first = str(err).replace("\n", " ")[:200]
        raise ConfigError(f"{source} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    with open(path, "rb") as fh:  # a directory raises IsADirectoryError (an OSError: one line)
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; a dgmbench config is a "
                          "few kilobytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                          "save it as UTF-8") from None
    return parse_yaml_text(text, f"config file {path}")


RESULTS_ROOT = "results"
# Paths and names from a config end up in file names and in Snakemake's shell commands: allow only characters
# that mean nothing to a shell or to a glob (letters, digits, and _ . - and / for paths), and no ".." component.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
SAFE_PATH = re.compile(r"[A-Za-z0-9_.\-/]+")


def check_name(kind: str, name: Any) -> None:
    """A model, variant or dataset name is used as a directory name: letters, digits, ``_ . -``, no ``..``."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > 100:
        raise ConfigError(f"{kind} name {short(name)} is not allowed: use letters, digits and _ . - "
                          "(starting with a letter or digit, no '..', at most 100 characters)")


def check_results_path(key: str, value: str, *, roots: tuple[str, ...] = (RESULTS_ROOT,)) -> None:
    """A grid writes only inside ``results/`` of the working directory: ``runs_dir`` and ``results_dir`` must
    be relative paths of safe characters (:data:`SAFE_PATH`) that stay under it once resolved — ``..`` and
    symbolic links followed. A config file, which may come from someone else, then cannot make a pipeline write
    elsewhere or run a command; ``dgmbench train --out`` given on the command line is the user's own choice and
    is not restricted."""
    import os

    allowed = " or ".join(f"{r}/" for r in roots)
    if not isinstance(value, str) or not value or not SAFE_PATH.fullmatch(value):
        raise ConfigError(
            f"{key} = {short(value)} is not an allowed path: use a relative path under {allowed} of letters, "
            f"digits and _ . - / only (e.g. {roots[0]}/runs)"
        )
    cwd = Path(os.getcwd())
    target = (cwd / value).resolve()
    if not any(target == (cwd / r).resolve() or (cwd / r).resolve() in target.parents for r in roots):
        raise ConfigError(
            f"{key} = {short(value)} is outside the results directory: it must be a relative path under "
            f"{allowed} (e.g. {roots[0]}/runs) that stays there with symbolic links followed; run from another "
            f"working directory to write elsewhere"
        )


def check_tracking_uri(uri: Any, *, confine: bool) -> None:
    """``tracking_uri`` is null (the default sqlite store), an http(s) server, or a ``sqlite:///`` / ``file:``
    store. With ``confine`` (a config file's value) a store on disk must lie under ``mlflow/`` or ``results/``
    of the working directory, like every other path a config names."""
    from urllib.parse import urlsplit

    if uri is None:
        return
    fix = "give http(s)://HOST:PORT, sqlite:///mlflow/NAME.db, or null for the default store mlflow/mlflow.db"
    if not isinstance(uri, str) or not uri or len(uri) > 1000 or any(c.isspace() for c in uri):
        raise ConfigError(f"tracking_uri = {short(uri)} is not a tracking URI; {fix}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        raise ConfigError(f"tracking_uri = {short(uri)} is malformed; {fix}") from None
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(f"tracking_uri = {short(uri)} names no server; {fix}")
        return
    if parts.scheme == "sqlite" and uri.startswith("sqlite:///") and len(uri) > len("sqlite:///"):
        path = uri[len("sqlite:///"):]
    elif parts.scheme == "file" and parts.path:
        path = parts.path
    else:
        raise ConfigError(f"tracking_uri = {short(uri)} is not a tracking URI dgmbench can use; {fix}")
    if confine:
        if path.startswith("/"):
            import os

            path = os.path.relpath(path, os.getcwd())
        check_results_path("tracking_uri", path, roots=("mlflow", RESULTS_ROOT))


def validate_grid(raw: dict) -> dict:
    """Check a grid config (schema, registries, every model's and evaluator's keys); return it with defaults."""
    from .data import DATASETS
    from .metrics import EVAL_SETTINGS, EVALUATORS
    from .models import MODELS

    _schema_errors(raw)
    cfg = {**GRID_DEFAULTS, **raw}
    from .datafiles import register_data_files  # every process that loads the grid registers its file datasets

    register_data_files(cfg["data_files"])
    for key in ("runs_dir", "results_dir"):
        check_results_path(key, cfg[key])
    check_tracking_uri(cfg["tracking_uri"], confine=True)
    for name in cfg["variants"]:
        check_name("variant", name)
    for ds in cfg["datasets"]:
        check_name("dataset", ds)
    for name, settings in cfg["eval"].items():  # evaluators' own output dirs (e.g. a cache) obey the same rule
        for key, value in settings.items():
            if key.endswith("_dir") and isinstance(value, str):
                check_results_path(f"eval.{name}.{key}", value)
    if cfg["models"] is None:
        cfg["models"] = MODELS.names()
    for name, variant in cfg["variants"].items():
        if name in MODELS:
            raise ConfigError(f"variant {name!r} has the name of a registered model; choose another name")
        MODELS.get(variant["model"])
    valid_models = MODELS.names() + sorted(cfg["variants"])
    for ds in cfg["datasets"]:
        DATASETS.get(ds)  # raises UnknownNameError listing the valid ones
    for m in cfg["models"]:
        if m not in valid_models:
            raise ConfigError(f"unknown model {short(m)} in models; valid models: {', '.join(valid_models)}")
    for section in ("train", "hparams"):
        for key in cfg[section]:
            if key != "all" or section == "hparams":
                if key not in valid_models:
                    valid = (["all"] if section == "train" else []) + valid_models
                    raise ConfigError(f"unknown model {short(key)} in {section}; valid keys: {', '.join(valid)}")
    for key in cfg["eval"]:
        if key not in EVAL_SETTINGS:
            EVALUATORS.get(key)
    eval_settings(cfg)  # every evaluator's settings built and checked before any job starts
    # Build every run's dataclasses once so type errors surface before any job starts.
    for m in cfg["models"]:
        resolve_run(cfg, dataset=cfg["datasets"][0], model=m, seed=cfg["seeds"][0])
    return cfg


def load_grid(path: str | Path | None) -> dict:
    return validate_grid(read_yaml(path) if path else {})


# ------------------------------------------------------------------------------------------------- run
@dataclass
class RunConfig:
    dataset: str
    model: str  # the registered model (family)
    seed: int
    train: TrainConfig
    hparams: Any  # the family's Config dataclass
    device: str = "auto"
    threads: int = 1
    data_root: str | None = None
    tracking_uri: str | None = None
    experiment: str = "dgmbench"
    variant: str | None = None  # the grid's variant name, if this run is one (e.g. "vae-beta4")
    data_file: dict | None = None  # the grid's data_files.<dataset> declaration when the dataset is a file

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "variant": self.variant,
            "seed": self.seed,
            **{k: getattr(self, k) for k in RUN_KEYS},
            "train": dataclasses.asdict(self.train),
            "hparams": dataclasses.asdict(self.hparams),
            **({"data_file": self.data_file} if self.data_file else {}),  # absent for registered datasets
        }

    @property
    def label(self) -> str:
        """The name this run goes by in the grid, tables and run directories: the variant or the model."""
        return self.variant or self.model

    @property
    def run_name(self) -> str:
        return f"{self.label}-{self.dataset}-seed{self.seed}"


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalars and lists, with numbers like ``1e-3`` read as floats."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_sets(run: dict, sets: list[str]) -> dict:
    """Apply ``key=value`` overrides to a run dict (keys like ``train.lr``, ``hparams.latent_dim``)."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set train.max_epochs=5)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] == "eval":
            raise ConfigError(f"--set {key.strip()}: evaluation settings are not part of a training run; put them "
                              f"under eval: in a grid file and pass it to `dgmbench evaluate --config GRID`")
        node = run
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node:
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"unknown key {'.'.join(parts[: i + 1])!r} in --set; valid keys: {', '.join(valid)}")
            node = node[p]
        leaf = parts[-1]
        if not isinstance(node, dict) or leaf not in node:
            valid = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"unknown key {key!r} in --set; valid keys here: {', '.join(valid)}")
        node[leaf] = parse_value(text)
    return run


def eval_settings(grid: dict | None = None) -> dict:
    """The evaluation settings, resolved in this one place: every evaluator's Config (and the evaluation-wide
    settings, ``test_subset``) from its defaults updated with the grid's ``eval.<name>``, checked and typed.
    Training never reads them: they are not part of a run's config, its checkpoint or its resume check."""
    from .metrics import EVAL_SETTINGS, EVALUATORS

    classes = {**{name: EVALUATORS.get(name).Config for name in EVALUATORS.names()}, **EVAL_SETTINGS}
    given = (grid or {}).get("eval") or {}
    return {name: build_dataclass(cls, given.get(name, {}), where=f"eval.{name}") for name, cls in classes.items()}


def run_grid(grid: dict, *, dataset: str, model: str, seed: int, evaluation: bool = False) -> dict:
    """The grid narrowed to one run: exactly the sections :func:`resolve_run` reads for it (its family's and
    variant's train/hparams, its dataset's file declaration, device, data root, tracking store, output dirs) and,
    for evaluation, the eval section. Snakemake hands it to each job as that job's settings (and reruns the job
    when it changes), so the precedence of settings is defined here once, not again in the workflow."""
    variant = grid.get("variants", {}).get(model)
    base = variant["model"] if variant else model
    train, hparams = grid.get("train", {}), grid.get("hparams", {})
    files = grid.get("data_files", {})
    out = {
        "datasets": [dataset],
        "models": [model],
        "seeds": [int(seed)],
        "runs_dir": grid.get("runs_dir", GRID_DEFAULTS["runs_dir"]),
        "results_dir": grid.get("results_dir", GRID_DEFAULTS["results_dir"]),
        "train": {k: train[k] for k in ("all", base) if k in train},
        "hparams": {k: hparams[k] for k in (base,) if k in hparams},
        "variants": {model: variant} if variant else {},
        **({"data_files": {dataset: files[dataset]}} if dataset in files else {}),
        **{k: grid[k] for k in ("device", "data_root", "tracking_uri", "experiment") if k in grid},
    }
    if evaluation:
        out["eval"] = grid.get("eval", {})
    return out


def resolve_run(grid: dict, *, dataset: str, model: str, seed: int, sets: list[str] | None = None) -> RunConfig:
    """Resolve one run from a validated grid: family defaults < train.all < train.<model> < --set."""
    from .data import DATASETS
    from .models import MODELS

    DATASETS.get(dataset)
    variant = grid.get("variants", {}).get(model)
    base = variant["model"] if variant else model
    cls = MODELS.get(base)
    train = {
        **dataclasses.asdict(TrainConfig()),
        **cls.train_defaults,
        **grid["train"].get("all", {}),
        **grid["train"].get(base, {}),
        **(variant or {}).get("train", {}),
    }
    hparams = {**dataclasses.asdict(cls.Config()), **grid["hparams"].get(base, {}), **(variant or {}).get("hparams", {})}
    run = {
        "dataset": dataset,
        "model": base,
        "variant": model if variant else None,
        "seed": seed,
        **{k: grid.get(k, GRID_DEFAULTS[k]) for k in RUN_KEYS},
        "train": train,
        "hparams": hparams,
        "data_file": grid.get("data_files", {}).get(dataset),
    }
    apply_sets(run, sets or [])
    return run_from_dict(run)


def run_from_dict(run: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from its dict form (a saved config), re-validating everything. An ``eval``
    section (saved by dgmbench ≤ 0.1, when evaluation settings travelled with the run) is ignored."""
    from .models import MODELS

    if run.get("data_file"):  # a saved run config re-registers its file dataset (evaluate reads only the run)
        from .datafiles import register_data_files

        register_data_files({run["dataset"]: run["data_file"]})
    cls = MODELS.get(run["model"])
    seed = run.get("seed")
    # Seeds below 2^32: numpy takes 32 bits, so seeds 2^32 apart would silently reproduce each other.
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < MAX_SEED:
        raise ConfigError(f"seed must be a non-negative integer below 2^32 (0 to {MAX_SEED - 1}), got {short(seed)}")
    if run.get("variant") is not None:
        check_name("variant", run["variant"])
    device = run.get("device", "auto")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", device):
        raise ConfigError(f"device = {short(device)}; valid: auto, cpu, cuda, cuda:N")
    threads = run.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 1024:
        raise ConfigError(f"threads must be an integer from 1 to 1024, got {short(threads)}")
    check_tracking_uri(run.get("tracking_uri"), confine=False)
    if not isinstance(run.get("experiment", "dgmbench"), str) or not run.get("experiment", "dgmbench"):
        raise ConfigError(f"experiment must be a non-empty name, got {short(run.get('experiment'))}")
    if run.get("data_root") is not None and not isinstance(run["data_root"], str):
        raise ConfigError(f"data_root must be a directory path or null, got {short(run['data_root'])}")
    return RunConfig(
        dataset=run["dataset"],
        model=run["model"],
        variant=run.get("variant"),
        data_file=run.get("data_file"),
        seed=run["seed"],
        train=build_dataclass(TrainConfig, run["train"], where="train"),
        hparams=build_dataclass(cls.Config, run["hparams"], where=f"hparams.{run['model']}"),
        **{k: run.get(k, GRID_DEFAULTS[k]) for k in RUN_KEYS},
    )
