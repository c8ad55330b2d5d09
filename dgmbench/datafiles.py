"""Your own data, from files, declared in the grid: a dataset is a ``.npz`` or a folder of PNGs plus a split rule.

A grid's ``data_files`` section names datasets read from the working directory (nothing is downloaded)::

    data_files:
      mydata:
        path: data/my.npz            # uint8 x (N, C, H, W), optional integer y (N,)
        levels: 256                  # pixel values are 0..levels-1
        split: {fractions: [0.8, 0.1, 0.1], seed: 0}      # train/val/test of a seeded permutation
        # split: {train: data/train.txt, val: data/val.txt, test: data/test.txt}   # or index files (.txt/.npy)
        description: my microscope crops          # optional, shown by `dgmbench list`
        min_split_size: 8                          # optional: every split needs at least this many images

``path`` may instead be a folder of PNGs: one subfolder per class (the sorted subfolder names are the classes
0, 1, ...) or the PNGs directly (no labels). Greyscale PNGs give C = 1, RGB give C = 3; the stored values are the
levels themselves (a 17-level dataset stores 0..16). A dataset without labels gets label 0 everywhere
(``num_classes = 1``).

Paths are data, never code: ``.npz`` files are read with ``allow_pickle=False``, and every path must be relative
and stay inside the working directory, so a grid from someone else cannot make a run read elsewhere (a symlink
you put in the working directory is your own choice). The file is read and validated when the grid is
(``validate_grid``, in every job's process), so a problem stops the pipeline before any job runs: every problem
found (shape, dtype, levels, labels, split rule, duplicates across splits, split sizes) is listed, one line each.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data import DATASETS, DatasetUnavailable, Split, _load_cached, register_dataset, split_of


class DataFileError(ConfigError, DatasetUnavailable):
    """A declared data file that cannot be used; ``str()`` lists every problem, one per line."""


@dataclass(frozen=True)
class DataFile:
    """One ``data_files.<name>`` declaration (the schema has already checked its keys and types)."""

    name: str
    path: str  # .npz file or folder of PNGs, relative to the working directory
    levels: int  # pixel values are integers 0..levels-1 (2..256)
    split: tuple  # (("fractions", (a, b, c)), ("seed", s)) or (("train", p), ("val", p), ("test", p))
    description: str = ""
    min_split_size: int = 8

    @classmethod
    def from_grid(cls, name: str, decl: dict) -> "DataFile":
        split = decl["split"]
        split = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in split.items()))
        return cls(name, decl["path"], decl["levels"], split, decl.get("description", ""),
                   decl.get("min_split_size", 8))

    @property
    def source(self) -> str:
        return f"file {self.path}"


def check_data_path(key: str, value: str) -> Path:
    """A relative path that stays inside the working directory after normalisation, else a ConfigError."""
    norm = posixpath.normpath(str(value).replace(os.sep, "/"))
    if not value or posixpath.isabs(norm) or norm.split("/")[0] == "..":
        raise DataFileError(f"{key} = {value!r} is outside the working directory: data files are read only from "
                            "relative paths inside it (link or copy the data there)")
    return Path(norm)


# ---------------------------------------------------------------------------------------------- reading
def _read_npz(path: Path, problems: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            x = f["x"] if "x" in keys else None
            y = f["y"] if "y" in keys else None
    except (OSError, ValueError, EOFError) as err:  # not a zip, truncated, or an object array (pickle refused)
        problems.append(f"cannot read it as .npz without pickles: {err}")
        return None, None
    if x is None:
        problems.append(f"it holds no array 'x' (found: {', '.join(sorted(keys)) or 'nothing'})")
    return x, y


def _read_png_folder(path: Path, problems: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    from PIL import Image

    classes = sorted(d for d in path.iterdir() if d.is_dir())
    files = [(i, f) for i, d in enumerate(classes) for f in sorted(d.glob("*.png"))] if classes else \
        [(None, f) for f in sorted(path.glob("*.png"))]
    if not files:
        problems.append("the folder holds no .png files (directly or in one subfolder per class)")
        return None, None
    images, first_shape = [], None
    for _, f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in ("L", "RGB"):
                    problems.append(f"{f}: PNG mode {im.mode}; use 8-bit greyscale (L) or RGB")
                    return None, None
                a = np.asarray(im, dtype=np.uint8)
        except OSError as err:
            problems.append(f"{f}: cannot read it as a PNG: {err}")
            return None, None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
        if first_shape is None:
            first_shape = a.shape
        elif a.shape != first_shape:
            problems.append(f"{f}: shape {a.shape} differs from the first image's {first_shape}; all must match")
            return None, None
        images.append(a)
    y = np.array([c for c, _ in files], dtype=np.int64) if classes else None
    return np.stack(images), y


def _split_indices(spec: DataFile, n: int, problems: list[str]) -> list[np.ndarray] | None:
    rule = dict(spec.split)
    if "fractions" in rule:
        fr = np.asarray(rule["fractions"], dtype=float)
        if len(fr) != 3 or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
            problems.append(f"split.fractions = {list(rule['fractions'])}: give three fractions ≥ 0 summing to 1")
            return None
        order = np.random.default_rng(rule.get("seed", 0)).permutation(n)
        n_val, n_test = int(round(fr[1] * n)), int(round(fr[2] * n))
        return [order[: n - n_val - n_test], order[n - n_val - n_test : n - n_test], order[n - n_test :]]
    out = []
    for part in ("train", "val", "test"):
        key = f"data_files.{spec.name}.split.{part}"
        try:
            p = check_data_path(key, rule[part])
            idx = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.int64, ndmin=1)
        except DataFileError as err:
            problems.append(str(err))
            continue
        except (OSError, ValueError) as err:
            problems.append(f"{key} = {rule[part]!r}: cannot read integer indices from it ({err})")
            continue
        idx = np.asarray(idx).reshape(-1)
        if not np.issubdtype(idx.dtype, np.integer):
            problems.append(f"{key}: indices must be integers, got {idx.dtype}")
        elif len(idx) and (idx.min() < 0 or idx.max() >= n):
            problems.append(f"{key}: index {int(idx.max() if idx.max() >= n else idx.min())} is outside 0..{n - 1}")
        elif len(np.unique(idx)) != len(idx):
            problems.append(f"{key}: an index appears twice")
        else:
            out.append(idx.astype(np.int64))
    return out if len(out) == 3 else None


def read_data_file(spec: DataFile) -> tuple[tuple[int, int, int], int, tuple[Split, Split, Split]]:
    """Read and validate one declared dataset: ((C, H, W), num_classes, (train, val, test)). Raises
    :class:`DataFileError` listing every problem found."""
    where = f"data_files.{spec.name} ({spec.path})"
    path = check_data_path(f"data_files.{spec.name}.path", spec.path)
    problems: list[str] = []
    if not 2 <= spec.levels <= 256:
        problems.append(f"levels = {spec.levels}: must be 2..256 (values are stored as uint8)")
    if path.is_dir():
        x, y = _read_png_folder(path, problems)
    elif path.suffix == ".npz" and path.is_file():
        x, y = _read_npz(path, problems)
    else:
        raise DataFileError(f"{where}: no such .npz file or folder of PNGs in the working directory {Path.cwd()}")
    parts = None
    if x is not None:
        if x.ndim != 4:
            problems.append(f"x has shape {x.shape}: expected N×C×H×W (4 dimensions; add the channel axis)")
        if x.dtype != np.uint8:
            problems.append(f"x has dtype {x.dtype}: expected uint8 levels 0..{spec.levels - 1}")
        elif len(x) and int(x.max()) >= spec.levels:
            problems.append(f"pixel value {int(x.max())} ≥ levels = {spec.levels}: raise levels or rescale the data")
        if y is not None and (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0)):
            problems.append(f"y has shape {y.shape} and dtype {y.dtype}: expected non-negative integers of shape ({len(x)},)")
        parts = _split_indices(spec, len(x), problems)
    if parts is not None and x is not None and x.ndim == 4:
        names = ("train", "val", "test")
        owner: dict[bytes, str] = {}
        for name, idx in zip(names, parts):
            if len(idx) < spec.min_split_size:
                problems.append(f"the {name} split has {len(idx)} images; min_split_size = {spec.min_split_size}")
            clashes = 0
            for i in idx:
                key = x[i].tobytes()
                first = owner.setdefault(key, name)
                clashes += first != name
            if clashes:
                problems.append(f"{clashes} images of the {name} split also appear in an earlier split (identical "
                                "pixels): remove the duplicates so no test image is seen in training")
    if problems:
        lines = [f"{where} is not a usable dataset:"] + [f"  - {p}" for p in problems] if len(problems) > 1 else \
            [f"{where}: {problems[0]}"]
        raise DataFileError("\n".join(lines))
    y = y.astype(np.int64) if y is not None else np.zeros(len(x), dtype=np.int64)
    splits = tuple(split_of(x[i], y[i]) for i in parts)
    return tuple(x.shape[1:]), int(y.max()) + 1 if len(y) else 1, splits


# ------------------------------------------------------------------------------------------ registering
_DECLARED: dict[str, DataFile] = {}  # name → the declaration registered in this process


def register_data_files(declarations: dict[str, dict] | None) -> None:
    """Register a grid's ``data_files`` as datasets (idempotent; a name re-declared otherwise replaces the old
    file dataset). A name taken by a built-in or plugin dataset is refused, naming both sources."""
    for name, decl in (declarations or {}).items():
        spec = DataFile.from_grid(name, decl)
        if _DECLARED.get(name) == spec:
            continue
        if name in DATASETS and name not in _DECLARED:
            raise DataFileError(f"data_files.{name} ({spec.source}) clashes with dataset {name!r} from "
                                f"{DATASETS.source(name)}; choose another name")
        shape, num_classes, splits = read_data_file(spec)
        if name in _DECLARED:
            DATASETS.unregister(name)
        _load_cached.cache_clear()  # load_dataset caches by name; a loaded earlier file of this name is stale
        description = spec.description or f"{len(splits[0])}/{len(splits[1])}/{len(splits[2])} images from {spec.path}"
        register_dataset(name, shape=shape, num_levels=spec.levels, num_classes=num_classes,
                         description=description, source=spec.source)(lambda data_root, s=splits: s)
        _DECLARED[name] = spec
