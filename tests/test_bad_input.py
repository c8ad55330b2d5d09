"""Bad input through the CLI: each case ends with one clear line on stderr (``dgmbench: error: ...``) and exit
status 2 — never a traceback — and leaves what was already computed as it was."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
from pathlib import Path

import pytest
import torch

from dgmbench.cli import EXIT_USER_ERROR, main

FAST = ["--set", "train.max_epochs=1", "--set", "train.num_train=64", "--set", "train.num_val=32"]


def run_cli(capsys, *argv: str) -> str:
    """Run the CLI; assert it failed as a user error with a one-line message; return that message."""
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_USER_ERROR, f"exit status {rc} for {argv}: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("dgmbench: error:")]
    assert len(lines) == 1, err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run, shared by the cases that need an existing result to protect."""
    from dgmbench.config import load_grid, resolve_run
    from dgmbench.train import train

    root = tmp_path_factory.mktemp("trained")
    run = resolve_run(load_grid(None), dataset="digits", model="vae", seed=0,
                      sets=[s for s in FAST if s != "--set"] + ["train.checkpoint_every=1", "device=cpu"])
    run.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    train(run, root / "run", progress=False)
    return root / "run"


def digest(d: Path) -> dict[str, str]:
    """Hash of every file in ``d`` but the writer lock (an empty file any command on the run may create)."""
    from dgmbench.identity import LOCK_FILE

    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.is_file() and p.name != LOCK_FILE}


# (argv, substrings the message must contain). Each is a distinct kind of mistake.
CASES = {
    "unknown model": (["train", "--dataset", "digits", "--model", "nope"], ["unknown model 'nope'", "vae"]),
    "unknown dataset": (["train", "--dataset", "nope", "--model", "vae"], ["unknown dataset 'nope'", "digits"]),
    "unknown --set key": (["train", "--dataset", "digits", "--model", "vae", "--set", "train.nope=1"],
                          ["train.nope", "max_epochs"]),
    "unknown hparam": (["train", "--dataset", "digits", "--model", "vae", "--set", "hparams.nope=1"],
                       ["hparams.nope", "latent_dim"]),
    "wrong type": (["train", "--dataset", "digits", "--model", "vae", "--set", "train.max_epochs=abc"],
                   ["max_epochs", "wrong type"]),
    "wrong hparam type": (["train", "--dataset", "digits", "--model", "vae", "--set", "hparams.latent_dim=[1]"],
                          ["latent_dim", "wrong type"]),
    "zero epochs": (["train", "--dataset", "digits", "--model", "vae", "--set", "train.max_epochs=0"],
                    ["max_epochs must be ≥ 1"]),
    "negative lr": (["train", "--dataset", "digits", "--model", "vae", "--set", "train.lr=-1"], ["lr must be > 0"]),
    "negative seed": (["train", "--dataset", "digits", "--model", "vae", "--seed", "-1"], ["seed", "non-negative"]),
    "--set without =": (["train", "--dataset", "digits", "--model", "vae", "--set", "train.lr"], ["key=value"]),
    "bad device name": (["train", "--dataset", "digits", "--model", "vae", "--set", "device=tpu"], ["device", "cuda"]),
    "zero threads": (["train", "--dataset", "digits", "--model", "vae", "--set", "threads=0"], ["threads"]),
    "unknown evaluator (--only)": (["evaluate", "--run", "{trained}", "--only", "nope"],
                                   ["unknown evaluator 'nope'", "likelihood"]),
    "evaluator setting given to train": (["train", "--dataset", "digits", "--model", "vae", "--set", "eval.nope.k=1"],
                                         ["eval.nope", "evaluate --config"]),
    "evaluate without checkpoint": (["evaluate", "--run", "{tmp}"], ["no checkpoint", "train"]),
    "tables on empty runs dir": (["tables", "--runs", "{tmp}", "--out", "{tmp}/out"], ["no metrics.json"]),
    "mnist without data_root": (["train", "--dataset", "mnist", "--model", "vae"], ["data_root"]),
    "mnist in an empty dir": (["train", "--dataset", "mnist", "--model", "vae", "--set", "data_root={tmp}"],
                              ["data_root"]),
    "cifar10 in an empty dir": (["train", "--dataset", "cifar10", "--model", "vae", "--set", "data_root={tmp}"],
                                ["cifar-10-batches-py"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_simple_mistakes(case, capsys, tmp_path, isolated_cwd, monkeypatch, trained):
    monkeypatch.delenv("DGMBENCH_DATA", raising=False)
    argv, expected = CASES[case]
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{trained}", str(trained)) for a in argv]
    msg = run_cli(capsys, *argv)
    for text in expected:
        assert text in msg, f"{case}: {text!r} not in {msg!r}"
    assert not (isolated_cwd / "results").exists(), "a failed command must not start a run directory"


@pytest.mark.parametrize("text,expected", [
    ("datasets: [digits\nmodels: [vae", "not valid YAML"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("datasets: [digits]\nlearning_rate: 3\n", "learning_rate"),
    ("datasets: [digits]\nseeds: [-1]\n", "seeds"),
    ("datasets: [digits]\nmodels: [vae]\ntrain: {vae: {max_epochs: two}}\n", "max_epochs"),
    ("datasets: [digits]\nmodels: [vae]\neval: {nope: {}}\n", "unknown evaluator 'nope'"),
])
def test_bad_config_files(text, expected, capsys, tmp_path, isolated_cwd):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(text)
    assert expected in run_cli(capsys, "train", "--config", str(cfg), "--dataset", "digits", "--model", "vae")


def test_missing_config_file_and_directory(capsys, tmp_path, isolated_cwd):
    assert "does not exist" in run_cli(capsys, "train", "--config", str(tmp_path / "no.yaml"),
                                       "--dataset", "digits", "--model", "vae")
    assert str(tmp_path) in run_cli(capsys, "train", "--config", str(tmp_path), "--dataset", "digits", "--model", "vae")


def test_cuda_without_cuda(capsys, isolated_cwd):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    msg = run_cli(capsys, "train", "--dataset", "digits", "--model", "vae", "--set", "device=cuda", *FAST)
    assert "CUDA is not available" in msg and "cpu" in msg


def test_unreachable_tracking_server_fails_fast(capsys, tmp_path, isolated_cwd):
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    msg = run_cli(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", str(tmp_path / "run"), *FAST,
                  "--set", f"tracking_uri={uri}")
    assert time.monotonic() - t0 < 30, "an unreachable server must fail in seconds"
    assert "unreachable" in msg and uri in msg
    assert not any((tmp_path / "run").iterdir())  # nothing trained, nothing half-written


def test_resume_with_another_config_keeps_the_run(capsys, isolated_cwd, trained):
    before = digest(trained)
    msg = run_cli(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", str(trained), *FAST,
                  "--set", "train.lr=0.5")
    assert "different config" in msg
    assert digest(trained) == before


@pytest.mark.parametrize("kind", ["truncated", "foreign dict", "pickled module", "empty", "last.pt truncated"])
def test_bad_checkpoints(kind, capsys, tmp_path, isolated_cwd, trained):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "last.pt", "checkpoint.pt"):
        (run / name).write_bytes((trained / name).read_bytes())
    ckpt = run / ("last.pt" if kind.startswith("last.pt") else "checkpoint.pt")
    if "truncated" in kind:
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif kind == "foreign dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    elif kind == "pickled module":  # what torch.save(model) writes; weights_only=True must refuse it
        torch.save(torch.nn.Linear(2, 2), ckpt)
    else:
        ckpt.write_bytes(b"")
    if ckpt.name == "last.pt":
        msg = run_cli(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", str(run), *FAST,
                      "--set", "train.checkpoint_every=1", "--set", "device=cpu")
    else:
        msg = run_cli(capsys, "evaluate", "--run", str(run))
    assert str(ckpt) in msg and ("retrain" in msg or "delete" in msg)
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("kind", ["truncated", "bad magic", "not gzip"])
def test_corrupt_idx_files(kind, capsys, tmp_path, isolated_cwd):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(dims, fill=0):  # a valid unsigned-byte IDX file
        header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        n = 1
        for d in dims:
            n *= d
        return header + bytes([fill]) * n

    files = {"train-images-idx3-ubyte.gz": idx([60000, 28, 28]), "train-labels-idx1-ubyte.gz": idx([60000]),
             "t10k-images-idx3-ubyte.gz": idx([100, 28, 28]), "t10k-labels-idx1-ubyte.gz": idx([100])}
    bad = "t10k-images-idx3-ubyte.gz"
    if kind == "truncated":
        files[bad] = files[bad][:-100]
    elif kind == "bad magic":
        files[bad] = b"\x1f\x00" + files[bad][2:]
    for name, data in files.items():
        (raw / name).write_bytes(b"this is not gzip" if (kind == "not gzip" and name == bad) else gzip.compress(data))
    msg = run_cli(capsys, "train", "--dataset", "mnist", "--model", "vae", "--set", f"data_root={tmp_path}", *FAST)
    assert bad in msg


@pytest.mark.parametrize("where", ["under a file", "read-only filesystem"])
def test_unwritable_output(where, capsys, tmp_path, isolated_cwd):
    if where == "under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        out = Path("/proc/dgmbench-run")  # not writable, even by root (a full or read-only disk)
    msg = run_cli(capsys, "train", "--dataset", "digits", "--model", "vae", "--out", str(out), *FAST)
    assert str(out.parent) in msg or str(out) in msg


def test_unwritable_metrics_keeps_the_checkpoint(capsys, tmp_path, isolated_cwd, trained, monkeypatch):
    """evaluate that cannot write metrics.json (a full disk) fails cleanly; the checkpoint stays."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "checkpoint.pt", "mlflow_run_id"):
        (run / name).write_bytes((trained / name).read_bytes())
    import dgmbench.evaluate as ev

    def full_disk(obj, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(ev, "write_json", full_disk)
    before = digest(run)
    msg = run_cli(capsys, "evaluate", "--run", str(run), "--only", "training")
    assert "No space left" in msg and "metrics.json" in msg
    assert digest(run) == before


def test_corrupt_metrics_json_in_tables(capsys, tmp_path, isolated_cwd):
    d = tmp_path / "runs" / "digits" / "vae" / "seed0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text('{"run": ')
    msg = run_cli(capsys, "tables", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"))
    assert "metrics.json" in msg and "not valid JSON" in msg


# ------------------------------------------------------------------------------------------------ safety
@pytest.mark.parametrize("key,value", [("runs_dir", "/tmp/elsewhere"), ("results_dir", "../outside"),
                                       ("runs_dir", "results/../../x"), ("results_dir", "runs"),
                                       ("eval", {"sample_quality": {"cache_dir": "/tmp/cache"}})])
def test_config_cannot_write_outside_results(key, value, capsys, tmp_path, isolated_cwd):
    import yaml

    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump({"datasets": ["digits"], "models": ["vae"], key: value}))
    msg = run_cli(capsys, "train", "--config", str(cfg), "--dataset", "digits", "--model", "vae")
    assert "outside the results directory" in msg


@pytest.mark.parametrize("value", ["results", "results/runs", "./results/smoke/runs", "results/a/../b"])
def test_results_paths_inside_are_accepted(value):
    from dgmbench.config import validate_grid

    assert validate_grid({"runs_dir": value, "results_dir": value})["runs_dir"] == value


def test_out_on_the_command_line_may_be_anywhere(capsys, tmp_path, isolated_cwd):
    out = tmp_path / "anywhere" / "run"  # outside the working directory's results/: the user's explicit choice
    assert main(["train", "--dataset", "digits", "--model", "vae", "--out", str(out), *FAST]) == 0
    assert (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv,host,warned", [([], "127.0.0.1", False), (["--host", "0.0.0.0"], "0.0.0.0", True)])
def test_ui_binds_to_localhost_unless_asked(argv, host, warned, capsys, isolated_cwd, monkeypatch):
    import dgmbench.tracking as tracking

    calls = []
    monkeypatch.setattr(tracking, "serve_ui", lambda uri, h, port, **kw: calls.append((uri, h, port)) or 0)
    assert main(["ui", *argv]) == 0
    assert calls[0][1] == host
    assert ("warning" in capsys.readouterr().err) == warned
