"""Datasets from the grid's own files (dgmbench/datafiles.py): an .npz or a folder of PNGs becomes a registered
dataset with the declared split; every problem with the file gets its own clear message; and a declared .npz runs
through train, evaluate (in a fresh process that reads only the run) and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import dgmbench_process

from dgmbench.config import ConfigError, validate_grid
from dgmbench.data import DATASETS, load_dataset
from dgmbench.datafiles import DataFileError, register_data_files


def digits_npz(path: Path, n: int = 120, labels: bool = True) -> Path:
    """The first ``n`` digits images as an .npz (uint8 x (N, 1, 8, 8), values 0..16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    # Digits holds a few identical images; keep the first of each so that a random split has no duplicates.
    _, first = np.unique(d.images.reshape(len(d.images), -1), axis=0, return_index=True)
    keep = np.sort(first)[:n]
    x = d.images[keep].astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **({"x": x, "y": d.target[keep]} if labels else {"x": x}))
    return path


def declare(name="mine", path="data/mine.npz", levels=17, split=None, **extra) -> dict:
    return {name: {"path": path, "levels": levels, "split": split or {"fractions": [0.8, 0.1, 0.1], "seed": 0}, **extra}}


@pytest.fixture(autouse=True)
def forget_file_datasets():
    """Each test declares its own files; drop them afterwards so the registry is as the next test expects."""
    from dgmbench import datafiles

    yield
    for name in list(datafiles._DECLARED):
        DATASETS.unregister(name)
        del datafiles._DECLARED[name]


def test_npz_becomes_a_dataset_with_the_declared_split(isolated_cwd):
    digits_npz(isolated_cwd / "data" / "mine.npz")
    grid = validate_grid({"datasets": ["mine"], "models": ["vae"], "seeds": [0], "data_files": declare()})
    assert grid["datasets"] == ["mine"] and DATASETS.source("mine") == "file data/mine.npz"
    ds = load_dataset("mine")
    assert (ds.info.shape, ds.info.num_levels, ds.info.num_classes) == ((1, 8, 8), 17, 10)
    assert [len(ds.train), len(ds.val), len(ds.test)] == [96, 12, 12]
    seen = {bytes(im.numpy().tobytes()) for im in ds.train.x}
    assert not any(im.numpy().tobytes() in seen for im in ds.test.x)
    register_data_files(declare())  # the same declaration again (another load of the grid) is a no-op
    assert load_dataset("mine") is ds


def test_png_folder_with_class_subfolders(isolated_cwd):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (isolated_cwd / "pngs" / c).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 4, (5, 6), dtype=np.uint8), mode="L").save(isolated_cwd / "pngs" / c / f"{i}.png")
    register_data_files(declare("pets", "pngs", levels=4, min_split_size=3))
    ds = load_dataset("pets")
    assert (ds.info.shape, ds.info.num_classes, len(ds.train) + len(ds.val) + len(ds.test)) == ((1, 5, 6), 2, 30)
    assert sorted(set(ds.train.y.tolist())) == [0, 1]


def test_index_file_split(isolated_cwd):
    digits_npz(isolated_cwd / "data" / "mine.npz", n=60, labels=False)
    for name, idx in (("train", range(0, 40)), ("val", range(40, 50)), ("test", range(50, 60))):
        np.savetxt(isolated_cwd / "data" / f"{name}.txt", np.array(list(idx)), fmt="%d")
    register_data_files(declare(split={k: f"data/{k}.txt" for k in ("train", "val", "test")}))
    ds = load_dataset("mine")
    assert [len(ds.train), len(ds.val), len(ds.test)] == [40, 10, 10] and ds.info.num_classes == 1


@pytest.mark.parametrize("make, decl, message", [
    (lambda d: np.savez(d / "data/mine.npz", x=np.zeros((20, 8, 8), np.uint8)), {}, "x has shape (20, 8, 8): expected N×C×H×W"),
    (lambda d: np.savez(d / "data/mine.npz", x=np.zeros((40, 1, 2, 2), np.float32)), {}, "x has dtype float32: expected uint8"),
    (lambda d: digits_npz(d / "data/mine.npz"), {"levels": 16}, "pixel value 16 ≥ levels = 16"),
    (lambda d: np.savez(d / "data/mine.npz", x=np.zeros((40, 1, 2, 2), np.uint8)), {"min_split_size": 1},
     "images of the val split also appear in an earlier split"),
    (lambda d: digits_npz(d / "data/mine.npz", n=30), {}, "the val split has 3 images; min_split_size = 8"),
    (lambda d: digits_npz(d / "data/mine.npz"), {"split": {"fractions": [0.5, 0.1, 0.1]}}, "three fractions ≥ 0 summing to 1"),
    (lambda d: None, {"path": "/etc/passwd"}, "is outside the working directory"),
    (lambda d: None, {"path": "../elsewhere.npz"}, "is outside the working directory"),
    (lambda d: None, {}, "no such .npz file or folder of PNGs"),
    (lambda d: (d / "data/mine.npz").write_bytes(b"not a zip"), {}, "cannot read it as .npz"),
    (lambda d: np.savez(d / "data/mine.npz", x=np.array([None] * 40, dtype=object)), {}, "cannot read it as .npz without pickles"),
], ids=["shape", "dtype", "levels", "duplicates", "split-size", "fractions", "absolute-path", "dotdot-path",
        "missing", "corrupt", "pickle"])
def test_each_problem_has_its_own_message(isolated_cwd, make, decl, message):
    (isolated_cwd / "data").mkdir(exist_ok=True)
    make(isolated_cwd)
    with pytest.raises(DataFileError) as err:
        register_data_files({"mine": {**declare()["mine"], **decl}})
    assert message in str(err.value)
    assert "mine" not in DATASETS


def test_several_problems_are_listed_one_per_line(isolated_cwd):
    (isolated_cwd / "data").mkdir()
    np.savez(isolated_cwd / "data/mine.npz", x=np.full((10, 1, 2, 2), 300, np.int32), y=np.zeros(3, np.int64))
    with pytest.raises(DataFileError) as err:
        register_data_files(declare(levels=4))
    lines = str(err.value).splitlines()
    assert lines[0] == "data_files.mine (data/mine.npz) is not a usable dataset:"
    assert any("dtype int32" in ln for ln in lines) and any("y has shape (3,)" in ln for ln in lines)
    assert any("the val split has 1 images" in ln for ln in lines)
    assert all(ln.startswith("  - ") for ln in lines[1:])


def test_index_files_out_of_range_or_overlapping(isolated_cwd):
    digits_npz(isolated_cwd / "data" / "mine.npz", n=60)
    for name, idx in (("train", [0, 1, 2, 70]), ("val", [3, 3]), ("test", [4])):
        np.savetxt(isolated_cwd / "data" / f"{name}.txt", np.array(idx), fmt="%d")
    with pytest.raises(DataFileError) as err:
        register_data_files(declare(split={k: f"data/{k}.txt" for k in ("train", "val", "test")}))
    assert "split.train: index 70 is outside 0..59" in str(err.value) and "split.val: an index appears twice" in str(err.value)


def test_name_of_a_registered_dataset_is_refused_naming_both(isolated_cwd):
    digits_npz(isolated_cwd / "data" / "mine.npz")
    with pytest.raises(ConfigError, match="data_files.digits \\(file data/mine.npz\\) clashes with dataset 'digits' from dgmbench"):
        validate_grid({"data_files": declare("digits"), "models": ["vae"]})


def test_schema_refuses_unknown_keys_and_bad_split(isolated_cwd):
    with pytest.raises(ConfigError, match="data_files.mine"):
        validate_grid({"data_files": {"mine": {"path": "a.npz", "levels": 17, "split": {"fractions": [1.0]}}}})
    with pytest.raises(ConfigError, match="unknown key 'url'"):
        validate_grid({"data_files": {"mine": {"path": "a.npz", "levels": 17, "url": "http://x", "split": {"fractions": [0.8, 0.1, 0.1]}}}})


@pytest.mark.slow
def test_npz_dataset_runs_through_train_evaluate_and_tables(isolated_cwd):
    """Each step in its own process, as Snakemake runs them: train reads the grid; evaluate reads only the run
    directory (its saved config re-declares the file); tables reads the metrics."""
    from conftest import TINY_EVAL, TINY_TRAIN

    digits_npz(isolated_cwd / "data" / "mine.npz", n=200)
    grid = {"datasets": ["mine"], "models": ["vae"], "seeds": [0], "device": "cpu", "tracking_uri": None,
            "data_files": declare(), "train": {"all": TINY_TRAIN}, "eval": TINY_EVAL}
    (isolated_cwd / "grid.yaml").write_text(yaml.safe_dump(grid))
    (isolated_cwd / "eval.yaml").write_text(yaml.safe_dump({"eval": TINY_EVAL}))  # settings only, no data_files
    run = "results/runs/mine/vae/seed0"

    def dgmbench(*args):
        proc = dgmbench_process(args, cwd=isolated_cwd, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    dgmbench("train", "--config", "grid.yaml", "--dataset", "mine", "--model", "vae", "--seed", "0")
    assert yaml.safe_load((isolated_cwd / run / "config.yaml").read_text())["data_file"]["path"] == "data/mine.npz"
    dgmbench("evaluate", "--config", "eval.yaml", "--run", run)
    metrics = json.loads((isolated_cwd / run / "metrics.json").read_text())
    assert metrics["run"]["dataset"] == "mine" and metrics["likelihood"]["num_images"] == 20
    dgmbench("tables", "--runs", "results/runs", "--out", "results")
    lik = (isolated_cwd / "results" / "tables" / "likelihood.csv").read_text()
    assert "mine" in lik and "vae" in lik
