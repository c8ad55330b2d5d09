"""Config validation: unknown names and keys, wrong types, defaults, precedence, the shipped grids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dgmbench.config import ConfigError, load_grid, resolve_run, validate_grid
from dgmbench.data import list_datasets
from dgmbench.models import list_models
from dgmbench.registry import Registry, UnknownNameError

REPO = Path(__file__).resolve().parents[1]


def test_registry_refuses_duplicates_and_lists_valid_names():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
    with pytest.raises(UnknownNameError, match="valid things: a"):
        reg.get("b")


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml"])
def test_shipped_grids_validate_and_cover_every_model(name):
    grid = load_grid(REPO / "config" / name)
    assert set(grid["models"]) == set(list_models()), "the default and smoke grids run every registered model"
    assert grid["datasets"] == ["digits"]


def test_schema_in_workflow_is_the_packaged_schema():
    from dgmbench.config import load_schema

    assert yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()) == load_schema()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"datasets": ["nope"]}, "unknown dataset 'nope'; valid datasets: "),
        ({"models": ["nope"]}, "unknown model 'nope' in models; valid models: "),
        ({"learning_rate": 1}, "unknown key 'learning_rate' in (top level); valid keys: "),
        ({"seeds": [-1]}, "config field seeds.0"),
        ({"seeds": "0"}, "config field seeds"),
        ({"threads": 0}, "config field threads"),
        ({"device": "tpu"}, "config field device"),
        ({"train": {"all": {"max_epoch": 3}}}, "unknown key train.max_epoch; valid keys for train: "),
        ({"train": {"all": {"max_epochs": "many"}}}, "train.max_epochs = 'many' has the wrong type: expected int"),
        ({"train": {"all": {"lr": -1.0}}}, "lr must be > 0"),
        ({"train": {"nope": {}}}, "unknown model 'nope' in train; valid keys: all, "),
        ({"hparams": {"vae": {"latent": 3}}}, "unknown key hparams.vae.latent; valid keys for hparams.vae: "),
        ({"hparams": {"vae": {"decoder": "gaussian"}}}, "expected one of 'categorical', 'logistic'"),
        ({"eval": {"nope": {}}}, "unknown evaluator 'nope'"),
        ({"variants": {"vae": {"model": "vae"}}}, "has the name of a registered model"),
    ],
)
def test_bad_configs_name_the_field_and_the_choices(raw, message):
    with pytest.raises((ConfigError, UnknownNameError)) as info:
        validate_grid(raw)
    assert message in str(info.value)


def test_precedence_family_defaults_then_all_then_model_then_set():
    from dgmbench.models import MODELS

    grid = validate_grid({"models": ["vae"], "train": {"all": {"batch_size": 32, "lr": 0.01}, "vae": {"lr": 0.02}}})
    run = resolve_run(grid, dataset="digits", model="vae", seed=3, sets=["train.max_epochs=7", "hparams.latent_dim=4"])
    assert run.train.batch_size == 32 and run.train.lr == 0.02 and run.train.max_epochs == 7
    assert run.hparams.latent_dim == 4 and run.seed == 3
    plain = resolve_run(validate_grid({}), dataset="digits", model="vae", seed=0)
    assert plain.train.max_epochs == MODELS.get("vae").train_defaults["max_epochs"]


def test_variants_inherit_then_override():
    grid = validate_grid({"models": ["vae", "vae-b4"], "hparams": {"vae": {"latent_dim": 8}},
                          "variants": {"vae-b4": {"model": "vae", "hparams": {"beta": 4.0}}}})
    run = resolve_run(grid, dataset="digits", model="vae-b4", seed=0)
    assert run.model == "vae" and run.variant == "vae-b4" and run.run_name == "vae-b4-digits-seed0"
    assert run.hparams.beta == 4.0 and run.hparams.latent_dim == 8


def test_set_rejects_unknown_keys_and_parses_numbers():
    grid = validate_grid({})
    with pytest.raises(ConfigError, match="valid keys here: .*latent_dim"):
        resolve_run(grid, dataset="digits", model="vae", seed=0, sets=["hparams.nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        resolve_run(grid, dataset="digits", model="vae", seed=0, sets=["train.lr"])
    run = resolve_run(grid, dataset="digits", model="vae", seed=0, sets=["train.lr=1e-3"])
    assert run.train.lr == pytest.approx(1e-3)


def test_run_config_round_trips_through_its_dict():
    from dgmbench.config import run_from_dict

    run = resolve_run(validate_grid({}), dataset="digits", model="vae", seed=1)
    assert run_from_dict(run.to_dict()).to_dict() == run.to_dict()


def test_every_dataset_is_listed():
    assert {"digits", "fashion-mnist", "mnist5k", "animal-mnist", "mnist", "cifar10"} <= set(list_datasets())


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name != "config.yaml"))
def test_every_other_grid_writes_its_tables_under_its_own_directory(name):
    """Only the default grid may rebuild the committed results/tables and results/figures."""
    grid = load_grid(REPO / "config" / name)
    out = Path(grid["results_dir"])
    assert out.parts[0] == "results" and len(out.parts) == 2, f"{name}: results_dir {out} is not results/<grid>"


def test_smoke_dry_run_plans_nothing_in_the_committed_tables(tmp_path):
    import os
    import subprocess
    import sys

    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(snakemake), "-n", "--configfile", "config/smoke.yaml"], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, "PATH": f"{snakemake.parent}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = [line.split("output:", 1)[1] for line in (proc.stdout + proc.stderr).splitlines() if "output:" in line]
    assert any("results/smoke/" in o for o in outputs), "the dry run planned no smoke job at all"
    planned = [p.strip() for o in outputs for p in o.split(",")]
    assert not [p for p in planned if p.startswith(("results/tables", "results/figures", "results/runs/"))], planned
