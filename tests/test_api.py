"""The Python API (dgmbench/api.py): a loaded run computes what the evaluator recorded; the metric functions have
the properties their definitions give (FD 0 for a set against itself, large for noise; IWAE-k ≥ ELBO and
non-decreasing in k; a real code at least as long as its ideal length); `import dgmbench` stays light; the example
script runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dgmbench
from conftest import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
SUBSET = 64  # test images the fixture's runs are evaluated on
SMALL_CLASSIFIER = {"classifier_steps": 200, "classifier_width": 8, "feature_dim": 16, "bootstrap": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained and evaluated (likelihood only) ARM and VAE runs: {model: run directory}."""
    from dgmbench.config import eval_settings, load_grid, resolve_run
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    root = tmp_path_factory.mktemp("api")
    settings = eval_settings({"eval": {"test_subset": {"max_images": SUBSET}, "likelihood": {"iwae_k": 8}}})
    out = {}
    for model in ("arm", "vae"):
        sets = [f"train.{k}={v}" for k, v in TINY_TRAIN.items()] + [f"tracking_uri=sqlite:///{root / 'mlflow.db'}"]
        run = resolve_run(load_grid(None), dataset="digits", model=model, seed=3, sets=sets)
        out[model] = root / model
        train(run, out[model], progress=False)
        evaluate(out[model], only=["likelihood"], eval_config=settings)
    return out


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    return {**SMALL_CLASSIFIER, "cache_dir": str(tmp_path_factory.mktemp("cache"))}


def recorded(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# ------------------------------------------------------------------------------------------ import cost
def test_import_dgmbench_stays_light_and_the_api_is_reached_lazily():
    code = "import sys, dgmbench; assert 'torch' not in sys.modules, 'import dgmbench imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    from dgmbench import api

    assert dgmbench.load_run is api.load_run and dgmbench.sample_quality is api.sample_quality
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dgmbench.nope  # noqa: B018
    assert {"load_run", "nll", "iwae", "sample_quality", "code_length"} <= set(dir(dgmbench))


# ---------------------------------------------------------------------------------------------- load_run
def test_load_run_computes_what_the_evaluator_recorded(runs):
    """Exact family: the mean −log_prob of the recorded test subset is the recorded NLL (deterministic). Bound
    family: seeded as the evaluator seeds, nll and iwae give its bound and IWAE numbers exactly (the same draws)."""
    from dgmbench.runtime import seed_everything

    for model, run_dir in runs.items():
        metrics = recorded(run_dir)
        run = dgmbench.load_run(run_dir)
        assert not run.model.training and run.device == torch.device("cpu") and run.info.name == "digits"
        assert run.config.seed == 3 and run.record["status"] == "ok" and run.metrics() == metrics
        from dgmbench.metrics import TestSubset, TestSubsetConfig

        subset, _ = TestSubset.choose(len(run.dataset.test), TestSubsetConfig(max_images=SUBSET))
        assert subset.to_dict() == metrics["test_subset"]  # test_images(run, SUBSET) are the images it scored
        x = dgmbench.test_images(run, SUBSET)
        lik = metrics["likelihood"]
        seed_everything(run.config.seed)
        own = dgmbench.nll(run.model, x)
        if model == "arm":
            assert own.estimator == lik["estimator"] == "exact" and own.stderr_nats == 0 and own.repeats == 1
            assert own.nll_nats == pytest.approx(lik["nll_nats"], rel=1e-12)
            with torch.no_grad():
                direct = -run.model.log_prob(x).double().mean()
            assert float(direct) == pytest.approx(lik["nll_nats"], rel=1e-6)
        else:
            iw = dgmbench.iwae(run.model, x, lik["iwae_k"])
            assert (own.nll_nats, own.stderr_nats) == (lik["bound_nats"], lik["bound_stderr_nats"])
            assert (iw.estimator, iw.nll_nats, iw.stderr_nats) == (lik["estimator"], lik["nll_nats"], lik["stderr_nats"])
        assert own.nll_bpd == pytest.approx(own.nll_nats / (64 * torch.log(torch.tensor(2.0)).item()))


def test_load_run_is_a_reader(runs):
    """No writer lock (a notebook must not block `dgmbench evaluate`), the caller's thread count untouched, the
    device chosen by the caller, a copied directory readable."""
    from dgmbench import identity

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        copy = runs["arm"].parent / "arm-copy"
        shutil.copytree(runs["arm"], copy, ignore=shutil.ignore_patterns(".dgmbench.lock"))
        run = dgmbench.load_run(copy / "checkpoint.pt")  # the checkpoint's path is accepted too
        assert torch.get_num_threads() == 2
        assert os.path.abspath(copy) not in identity._held
        assert run.dir == copy and next(run.model.parameters()).device.type == "cpu"
    finally:
        torch.set_num_threads(before)


def test_load_run_refuses_what_is_not_a_run_with_one_line(runs, tmp_path):
    from dgmbench.checkpoint import CheckpointError
    from dgmbench.config import ConfigError

    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    shutil.copytree(runs["vae"], bad, ignore=shutil.ignore_patterns(".dgmbench.lock"))
    data = (bad / "checkpoint.pt").read_bytes()
    (bad / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    (tmp_path / "notes.txt").write_text("hi")
    cases = [(tmp_path / "missing", CheckpointError, "no checkpoint"), (tmp_path / "empty", CheckpointError,
             "train the run first"), (bad, CheckpointError, "not a readable dgmbench checkpoint"),
             (tmp_path / "notes.txt", CheckpointError, "not a run directory")]
    for path, error, words in cases:
        with pytest.raises(error, match=words) as info:
            dgmbench.load_run(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="valid: auto, cpu"):
        dgmbench.load_run(runs["vae"], device="gpu")


# -------------------------------------------------------------------------------------------- likelihood
def test_iwae_is_at_least_the_elbo_and_grows_with_k(runs):
    """log p(x) ≥ IWAE-k ≥ ELBO in expectation, IWAE-k non-decreasing in k (Burda et al. 2016): in NLL terms,
    IWAE-k's NLL ≤ the ELBO's and non-increasing in k, within a few standard errors; IWAE-1 is the ELBO."""
    run = dgmbench.load_run(runs["vae"])
    x = dgmbench.test_images(run, 200)
    torch.manual_seed(0)
    elbo = dgmbench.nll(run.model, x, repeats=4)
    est = {k: dgmbench.iwae(run.model, x, k, repeats=4) for k in (1, 4, 32)}

    def tol(a, b):  # three standard errors of a difference of two independent estimates
        return 3 * (a.stderr_nats**2 + b.stderr_nats**2) ** 0.5

    assert abs(est[1].nll_nats - elbo.nll_nats) <= tol(est[1], elbo)  # the same estimator
    assert est[4].nll_nats <= est[1].nll_nats + tol(est[4], est[1])
    assert est[32].nll_nats <= est[4].nll_nats + tol(est[32], est[4])
    assert est[32].nll_nats < elbo.nll_nats - tol(est[32], elbo)  # a visible gain on a barely trained VAE
    assert est[32].stderr_nats < est[1].stderr_nats  # and less noise


def test_code_length_is_a_real_code_of_the_nll(runs):
    """An ARM's ANS code decodes bit-exactly, its ideal length is the model's NLL (the same probabilities), and the
    stored stream is that long up to a few 32-bit words and the coder's quantisation of the probabilities into
    integer tables (which can make it slightly shorter, too)."""
    run = dgmbench.load_run(runs["arm"])
    x = dgmbench.test_images(run, 24)
    code = dgmbench.code_length(run.model, x, verify_images=2)
    own = dgmbench.nll(run.model, x)
    assert code.round_trip_exact and code.verified_images == 2
    assert code.ideal_bpd == pytest.approx(own.nll_bpd, rel=1e-5)
    ideal_bits = code.ideal_bpd * code.num_images * code.num_dims
    assert abs(code.coded_bits - ideal_bits) <= 2 * 32 + 0.01 * ideal_bits


def test_functions_refuse_models_without_the_capability(runs):
    vae = dgmbench.load_run(runs["vae"])
    arm = dgmbench.load_run(runs["arm"])
    x = dgmbench.test_images(vae, 8)
    with pytest.raises(TypeError, match="bits-back"):
        dgmbench.code_length(vae.model, x)
    with pytest.raises(TypeError, match="supports_iwae = False"):
        dgmbench.iwae(arm.model, x, 4)
    with pytest.raises(ValueError, match="integer pixel levels"):
        dgmbench.nll(arm.model, x.float())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dgmbench.nll(arm.model, x[0])


# ---------------------------------------------------------------------------------------- sample quality
def test_sample_quality_of_real_images_and_of_noise(digits, classifier_cache):
    """The test split against itself: FD 0, precision = recall = 1 (every point lies in its own k-NN ball).
    N training images: exactly the data baseline (the same comparison). Uniform noise: FD far above that floor,
    precision near 0."""
    test = dgmbench.test_images(digits)
    same = dgmbench.sample_quality(test, digits, **classifier_cache)
    assert same.fd == pytest.approx(0.0, abs=1e-6 * same.data_fd) and same.precision == same.recall == 1.0
    real = dgmbench.sample_quality(digits.train.x[: len(test)], "digits", **classifier_cache)
    assert (real.fd, real.precision, real.recall) == (real.data_fd, real.data_precision, real.data_recall)
    assert real.precision > 0.5 and real.recall > 0.5 and real.fd_stderr > 0
    noise = dgmbench.sample_quality(torch.randint(17, test.shape, generator=torch.Generator().manual_seed(0)),
                                    digits, **classifier_cache)
    assert noise.fd > 10 * real.fd + 3 * noise.fd_stderr and noise.precision < 0.1
    assert noise.protocol.num_samples == len(test) and noise.protocol.num_reference == len(test)


def test_sample_quality_refuses_bad_samples_and_settings(digits, classifier_cache):
    from dgmbench.config import ConfigError

    x = dgmbench.test_images(digits, 20)
    for bad, words in [(x.float(), "integer levels"), (x[:, :, :4], r"shape \(N, 1, 8, 8\)"),
                       (x + 17, "levels 0..16"), (x[:3], "more than k = 3")]:
        with pytest.raises(ValueError, match=words):
            dgmbench.sample_quality(bad, digits, **classifier_cache)
    with pytest.raises(ConfigError, match="num_samples.*leave it out"):
        dgmbench.sample_quality(x, digits, num_samples=5)
    with pytest.raises(ConfigError, match="valid keys"):
        dgmbench.sample_quality(x, digits, n_neighbours=5)


# ------------------------------------------------------------------------------------------------ example
def test_example_script_runs_end_to_end(tmp_path):
    """What CI runs: examples/python_api.py trains a tiny VAE, loads it and prints every number it promises."""
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "python_api.py")], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for words in ("loaded vae-digits-seed0", "test NLL (ELBO)", "IWAE-100", "samples: FD", "uniform noise: FD"):
        assert words in proc.stdout, proc.stdout
    assert not any(tmp_path.iterdir())  # everything it wrote was in its temporary directory
