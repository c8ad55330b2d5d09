"""dgmbench's Python API end to end (docs/python-api.md walks through it).

    python examples/python_api.py                 # trains a tiny VAE on digits in a temporary directory first
    python examples/python_api.py RUN_DIR         # or uses a run you trained (e.g. results/runs/digits/vae/seed0)

It loads the run, computes its test NLL and, for a VAE, the IWAE-k bound for growing k, draws samples and scores
them (and uniform noise, for contrast) with the suite's Fréchet distance and precision/recall. Under a minute on a
CPU.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import dgmbench


def train_tiny_vae(workdir: Path) -> Path:
    """A VAE trained for a few epochs on part of digits, with `dgmbench train` (its MLflow store in ``workdir``)."""
    from dgmbench.cli import main

    out = workdir / "vae0"
    status = main(["train", "--dataset", "digits", "--model", "vae", "--seed", "0", "--out", str(out),
                   "--set", "train.max_epochs=5", "--set", "train.num_train=400",
                   "--set", f"tracking_uri=sqlite:///{workdir / 'mlflow.db'}"])
    if status != 0:
        sys.exit(status)
    return out


def main(run_dir: Path, workdir: Path) -> None:
    torch.manual_seed(0)  # the bounds and the samples are random: seed them for a repeatable printout

    # 1. Load a run: the model (eval mode, CPU), its dataset, config and training record.
    run = dgmbench.load_run(run_dir)
    print(f"loaded {run.config.run_name}: {run.model.name} ({run.model.likelihood.value} likelihood), "
          f"{run.record['epochs_run']} epochs, status {run.record['status']}; data {run.info.name} "
          f"{run.info.shape}, {run.info.num_levels} levels")

    # 2. Test images and their log-likelihood: log_prob gives nats per image; nll averages it (bits/dim, s.e.).
    x = dgmbench.test_images(run)  # (447, 1, 8, 8) int64 levels
    if run.model.likelihood.value != "none":
        with torch.no_grad():
            print(f"log_prob of the first 3 test images: {[round(v, 1) for v in run.model.log_prob(x[:3]).tolist()]} "
                  f"nats")
        est = dgmbench.nll(run.model, x)
        print(f"test NLL ({est.estimator}): {est.nll_bpd:.3f} bits/dim = {est.nll_nats:.2f} ± "
              f"{est.stderr_nats or 0:.2f} nats/image (± {est.sem_images_nats:.2f} over the {est.num_images} images)")

    # 3. A VAE's importance-weighted bound tightens as k grows (IWAE-1 is the ELBO).
    if run.model.supports_iwae:
        for k in (1, 10, 100):  # one draw; its s.e. by the jackknife over the k samples (none for k = 1)
            est = dgmbench.iwae(run.model, x, k)
            se = f"± {est.stderr_nats:.2f}" if est.stderr_nats is not None else "(one draw of one sample: no s.e.)"
            print(f"  {est.estimator:>9}: {est.nll_nats:8.2f} {se} nats/image ({est.nll_bpd:.3f} bits/dim)")

    # 4. Sample, and score the samples against the test images. The benchmark's feature classifier trains for
    #    1500 steps (the default, cached in results/cache); 300 steps, cached in the work directory, keep this fast.
    if run.model.can_sample:
        fast = {"classifier_steps": 300, "cache_dir": str(workdir / "cache")}
        samples = run.model.sample(len(x))
        q = dgmbench.sample_quality(samples, run, **fast)
        print(f"samples: FD {q.fd:.2f} ± {q.fd_stderr:.2f}, precision {q.precision:.2f}, recall {q.recall:.2f} "
              f"(real training images: FD {q.data_fd:.2f}, precision {q.data_precision:.2f}, "
              f"recall {q.data_recall:.2f}; classifier test accuracy {q.protocol.classifier_test_accuracy:.2f})")
        noise = torch.randint(run.info.num_levels, samples.shape)
        n = dgmbench.sample_quality(noise, run, **fast)
        print(f"uniform noise: FD {n.fd:.2f} ± {n.fd_stderr:.2f}, precision {n.precision:.2f}, recall {n.recall:.2f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="dgmbench-api-") as tmp:
        work = Path(tmp)
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else train_tiny_vae(work), work)
