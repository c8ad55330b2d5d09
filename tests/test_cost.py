"""What a number cost: the FLOP counter against a layer whose FLOPs are known, the CPU clock against the wall
clock, and the cost table built from a real (tiny) training and evaluation — plus metrics.json files written before
the timings existed, which must still parse and say "not measured"."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import TINY_EVAL, TINY_TRAIN, small_info
from dgmbench import clock
from dgmbench.models.base import GenerativeModel

SLACK_SECONDS = 0.05  # CPU time of bookkeeping threads and clock granularity (10 ms ticks)


@dataclass
class LinearConfig:
    width: int = 5  # output features of the one layer


class OneLinear(GenerativeModel):
    """A "model" that is one Linear(D, width) layer: its FLOPs are known in closed form."""

    Config = LinearConfig

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.layer = nn.Linear(info.num_dims, cfg.width)

    def loss(self, x):
        h = self.layer(x.flatten(1).float())  # (B, width)
        return (h + torch.randn_like(h)).pow(2).mean(), {}  # the noise consumes the RNG the trainer must restore


def test_flops_of_a_linear_layer_follow_the_counters_convention():
    """Linear(a, b) on a batch of n: the forward matmul is n·a·b multiply-adds, 2·n·a·b FLOPs in the counter's
    convention; a training step adds the weight gradient (another n·a·b multiply-adds) and no input gradient, as
    data need none. Bias additions, the loss and the optimizer are element-wise and not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from dgmbench.config import TrainConfig
    from dgmbench.train import train_step_flops

    info = small_info(shape=(1, 4, 3), num_levels=3)
    model = OneLinear(LinearConfig(width=5), info)
    n, a, b = 7, info.num_dims, 5
    x = torch.randint(0, 3, (n, *info.shape))
    with FlopCounterMode(display=False) as counter:
        model.layer(x.flatten(1).float())
    assert counter.get_total_flops() == 2 * n * a * b

    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(3)
    flops = train_step_flops(model, x, TrainConfig())
    after_rng = torch.rand(4)
    assert flops == 2 * n * a * b + 2 * n * a * b
    # Counted on a copy: the model's weights and the RNG stream are what they were.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(3)
    assert torch.equal(torch.rand(4), after_rng)


def test_cpu_seconds_stay_within_wall_seconds_times_threads():
    threads = torch.get_num_threads()
    with clock.Stopwatch() as busy:
        a = torch.randn(256, 256)
        for _ in range(200):
            a = torch.tanh(a @ a)
    rec = busy.record()
    assert 0 < rec["cpu_seconds"] <= rec["wall_seconds"] * threads + SLACK_SECONDS
    assert rec["threads"] == threads and len(rec["load_average"]) == 3
    with clock.Stopwatch() as idle:  # waiting is wall time, not CPU time
        import time

        time.sleep(0.2)
    assert idle.wall_seconds >= 0.2 and idle.cpu_seconds < 0.1
    assert clock.process_age_seconds() >= idle.wall_seconds  # this process started before the sleep


# ----------------------------------------------------------------------- the table from a real tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny VAE run, trained and evaluated (training, likelihood, sampling) by the package itself, laid out as
    a pipeline's runs directory."""
    from dgmbench.config import eval_settings, resolve_run, validate_grid
    from dgmbench.evaluate import evaluate
    from dgmbench.train import train

    root = tmp_path_factory.mktemp("cost")
    run = resolve_run(validate_grid({"train": {"all": TINY_TRAIN}, "device": "cpu"}), dataset="digits",
                      model="vae", seed=0)
    run.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    out = root / "runs" / "digits" / "vae" / "seed0"
    record = train(run, out, progress=False)
    metrics = evaluate(out, only=["training", "likelihood", "sampling"], eval_config=eval_settings({"eval": TINY_EVAL}))
    return root, record, metrics


def _old(metrics: dict, model: str) -> dict:
    """The same metrics as a file written before CPU seconds, FLOPs and the timing records existed."""
    old = copy.deepcopy(metrics)
    old["run"]["model"] = model
    for key in ("val_bpd", "batch_size", "steps_run", "flops_per_step", "timing"):
        del old["training"][key]
    del old["sampling"]["timing"]
    old["timing"] = {k: v for k, v in old["timing"].items() if k.endswith("_seconds")}  # flat wall seconds only
    return old


def test_training_and_evaluation_record_cpu_seconds_beside_wall_seconds(tiny_run):
    _, record, metrics = tiny_run
    threads = record["threads"]
    assert record["flops_per_step"] > 0 and record["steps_run"] == TINY_TRAIN["max_epochs"] * math.ceil(
        TINY_TRAIN["num_train"] / TINY_TRAIN["batch_size"])
    assert 0 < record["train_cpu_seconds"] <= record["train_seconds"] * threads + SLACK_SECONDS
    assert record["startup"]["cpu_seconds"] > 0 and record["startup"]["wall_seconds"] > 0
    for name, t in metrics["timing"]["evaluators"].items():
        assert 0 <= t["cpu_seconds"] <= t["wall_seconds"] * t["threads"] + SLACK_SECONDS, name
        assert t["wall_seconds"] == metrics["timing"][f"{name}_seconds"]  # the flat key old readers use
    # The sampling figures keep their calls: each figure is the batch over the median of its recorded calls.
    sampling = metrics["sampling"]
    cached = [m for m in sampling["timing"] if m["sampler"] == "cached"]
    assert [m["batch_size"] for m in cached] == TINY_EVAL["sampling"]["batch_sizes"]
    for m in cached:
        if m["skipped"] is None:
            import statistics

            assert sampling["samples_per_s"][str(m["batch_size"])] == m["batch_size"] / statistics.median(m["call_seconds"])
        else:
            assert sampling["samples_per_s"][str(m["batch_size"])] is None


def test_the_determinism_comparison_ignores_every_timing_record(tiny_run):
    from dgmbench.evaluate import without_timing

    _, _, metrics = tiny_run
    text = json.dumps(without_timing(metrics))
    assert "load_average" not in text and "cpu_seconds" not in text and "call_seconds" not in text
    assert '"flops_per_step"' in text  # deterministic: compared between reruns


def _mean(cell: str) -> float:
    """The mean of a "m ± sd" cell."""
    return float(cell.split(" ± ")[0])


def _close(x: float):
    return pytest.approx(x, rel=5e-3, abs=1e-3)  # the table's three significant digits, at most three decimals


def test_cost_table_from_the_trainers_and_evaluators_own_outputs(tiny_run, tmp_path):
    from dgmbench.results import RunRecord
    from dgmbench.tables import load_runs
    from dgmbench.tables.cost import cost_table

    root, record, metrics = tiny_run
    new = load_runs(root / "runs")
    old_seed = RunRecord.from_dict({**_old(metrics, "vae"), "run": {**_old(metrics, "vae")["run"], "seed": 1}})
    old_only = _old(metrics, "vae-old")  # a model whose every run predates the timings ...
    old_only["run"]["evaluated"]["sampling"] = False  # ... and (say) cannot sample: that evaluator did not apply
    old_only = RunRecord.from_dict(old_only)
    paths = cost_table(new + [old_seed, old_only], tmp_path)
    assert {p.name for p in paths} == {"cost.csv", "cost.md", "cost.html", "anytime_digits.png", "anytime_digits.json"}
    df = pd.read_csv(tmp_path / "tables" / "cost.csv", dtype=str).set_index("model")
    row, old = df.loc["vae"], df.loc["vae-old"]

    assert row["seeds"] == "2"  # the old run counts as a seed; its columns come from the new run alone
    assert row["FLOPs/step"] == f"{record['flops_per_step']:.3g} (batch {TINY_TRAIN['batch_size']})"
    assert _mean(row["train wall s"]) == _close(record["train_seconds"])
    assert _mean(row["train CPU s"]) == _close(record["train_cpu_seconds"])
    gflops = record["flops_per_step"] * record["steps_run"] / record["train_seconds"] / 1e9
    assert _mean(row["train GFLOP/s (counted)"]) == _close(gflops)
    # Both seeds have the evaluators' wall seconds (the old file's flat keys; here the same values): sd 0.
    assert _mean(row["eval s: likelihood"]) == _close(metrics["timing"]["likelihood_seconds"])
    assert " ± " in row["eval s: likelihood"]
    # The NLL at the full budget is the trainer's own best validation score, in bits/dim by the analytic factor.
    # (The old seed's copy converts the same curve's nats: the two routes agree, sd 0.)
    d = metrics["likelihood"]["num_dims"]
    assert row["best val NLL ≤100% epochs (bits/dim)"] == f"{record['best_val_nats'] / (d * math.log(2)):.3f} ± 0.000"
    assert row["test NLL (bits/dim)"] == f"{metrics['likelihood']['nll_bpd']:.3f} ± 0.000"

    # A file written before the timings parses, and the table says what it lacks.
    for col in ("FLOPs/step", "train CPU s", "start-up s, train job", "eval CPU s (all)",
                "train GFLOP/s (counted)"):
        assert old[col] == "not measured", col
    col = "best val NLL ≤50% epochs (bits/dim)"  # one run there, two (sd 0) in the vae row
    assert old[col] == row[col].removesuffix(" ± 0.000")  # the NLL budget columns read its curve's nats
    assert _mean(old["eval s: likelihood"]) == _mean(row["eval s: likelihood"])  # its flat wall seconds
    assert _mean(old["train wall s"]) == _close(record["train_seconds"])  # and the training's
    assert old["eval s: sampling"] == "—"  # did not apply: not a cost, and not "not measured" either
    notes = (tmp_path / "tables" / "cost.md").read_text()
    assert "load average" in notes and "Machine: cpu: " in notes and "were trained before CPU seconds" in notes


def test_the_grid_totals_sum_the_runs_own_cpu_seconds_and_divide_by_the_machines_cores(tiny_run, tmp_path):
    """The floor under a grid's wall time: the summed CPU seconds the trainer and the evaluators recorded, over
    the cores of the one CPU machine that ran them; nothing is claimed where a run lacks them or the machines
    differ (another core count, a GPU)."""
    import re

    from dgmbench.results import RunRecord
    from dgmbench.tables.cost import _floor_notes

    root, record, metrics = tiny_run
    scale = 1000.0  # the tiny run's seconds, as if each stretch took a thousand times longer: whole seconds to compare
    evaluators = metrics["timing"]["evaluators"]
    train, evaluate = record["train_cpu_seconds"] * scale, sum(t["cpu_seconds"] for t in evaluators.values()) * scale
    cores = int(re.search(r"(\d+) CPUs", record["machine"]).group(1))

    def seed(k: int, machine: str | None = None) -> RunRecord:
        m = copy.deepcopy(metrics)
        m["run"]["seed"] = k
        m["training"]["timing"]["training"]["cpu_seconds"] *= scale
        for t in m["timing"]["evaluators"].values():
            t["cpu_seconds"] *= scale
        if machine is not None:
            m["training"]["timing"]["machine"] = machine
        return RunRecord.from_dict(m)

    (note,) = _floor_notes([seed(0), seed(1), seed(2)])
    assert note.startswith("Grid totals (digits, 3 runs): ")
    assert f"training {3 * train:,.0f} CPU s" in note and f"evaluation {3 * evaluate:,.0f} CPU s" in note
    busy = float(re.search(r"cores busy for ([\d,]+) s", note).group(1).replace(",", ""))
    assert busy == pytest.approx(3 * (train + evaluate) / cores, abs=0.5)
    assert f"start-up {3 * record['startup']['cpu_seconds']:,.0f} CPU s over 3 job(s)" in note
    # Another machine, a GPU: the sums stand, no floor is claimed.
    for other in (record["machine"].replace(f"{cores} CPUs", f"{cores + 2} CPUs"), "cuda:0: a GPU; host x"):
        (note,) = _floor_notes([seed(0), seed(1, other)])
        assert "training" in note and "busy" not in note, other
    # A run from before CPU seconds were recorded: the totals are not claimed at all.
    (note,) = _floor_notes([seed(0), RunRecord.from_dict(_old(metrics, "vae"))])
    assert note == "Grid totals (digits): not measured (a run lacks its CPU seconds)."


def test_the_best_validation_nll_within_a_budget_only_improves_with_the_budget():
    from dgmbench.metrics.training import VAL_NLL, TrainingResult

    curve = [5.0, 3.0, None, 3.5, 2.0, 2.5, 1.9, 2.2]  # bits/dim per epoch; None: no score that epoch
    t = TrainingResult(lr=1e-3, epochs_run=8, best_epoch=7, stopped_early=False, loss_name="x", final_train_loss=None,
                       noise=None, rise_fraction=None, val_name="v", train_loss=[], val_nats=[], val_bpd=curve)
    # ⌈f·8⌉ epochs: 2, 4, 8 → the minimum of each prefix.
    assert [t.best_val_bpd_within(f) for f in (0.25, 0.5, 1.0)] == [3.0, 3.0, 1.9]
    assert t.best_val_bpd_within(0.1) == 5.0  # at least one epoch
    old = TrainingResult(**{**t.__dict__, "val_bpd": None, "val_name": VAL_NLL,
                            "val_nats": [None if v is None else v * 10 * math.log(2) for v in curve]})
    assert old.best_val_bpd_within(0.5, num_dims=10) == pytest.approx(3.0)  # written before val_bpd: from nats
    assert old.best_val_bpd_within(0.5) is None  # ... given D
    gan = TrainingResult(**{**old.__dict__, "val_name": "validation score"})
    assert gan.best_val_bpd_within(0.5, num_dims=10) is None  # not an NLL


def test_flops_are_counted_once_per_configuration(tmp_path, digits):
    """The count is cached by configuration: the first seed counts, another seed of the same configuration reads the
    count (the entry is altered here to prove that it is read, not recounted), another configuration counts its
    own. A count equals the counter's on the same model and batch."""
    from dgmbench.config import GRID_DEFAULTS, resolve_run
    from dgmbench.models import get_model
    from dgmbench.train import cached_train_step_flops, train_step_flops

    x = digits.train.x[:16]
    run = resolve_run({**GRID_DEFAULTS}, dataset="digits", model="vae", seed=0)
    model = get_model("vae", digits.info)
    first = cached_train_step_flops(run, model, x, tmp_path)
    assert first == train_step_flops(model, x, run.train) and first > 0
    (entry,) = tmp_path.glob("*.json")
    saved = json.loads(entry.read_text())
    entry.write_text(json.dumps({**saved, "flops": first + 1}))
    other_seed = resolve_run({**GRID_DEFAULTS}, dataset="digits", model="vae", seed=1)
    assert cached_train_step_flops(other_seed, model, x, tmp_path) == first + 1  # read from the cache
    wider = resolve_run({**GRID_DEFAULTS}, dataset="digits", model="vae", seed=0, sets=["hparams.hidden_dim=64"])
    small = get_model("vae", digits.info, hidden_dim=64)
    count = cached_train_step_flops(wider, small, x, tmp_path)
    assert count == train_step_flops(small, x, wider.train) and count < first  # its own entry, counted
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert cached_train_step_flops(run, model, x[:8], tmp_path) < first  # another batch shape: counted again


@pytest.mark.parametrize("name", sorted(__import__("dgmbench.models", fromlist=["MODELS"]).MODELS.names()))
def test_every_family_has_its_training_step_counted_without_changing_the_run(name, digits):
    """Every registered family (so a new one is covered for free): the counter sees its matmuls or convolutions,
    and counting leaves the model's weights, buffers and the RNG stream as they were."""
    from dgmbench.config import GRID_DEFAULTS, resolve_run
    from dgmbench.models import get_model
    from dgmbench.train import train_step_flops

    torch.manual_seed(0)
    model = get_model(name, digits.info)
    tc = resolve_run({**GRID_DEFAULTS}, dataset="digits", model=name, seed=0).train
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(5)
    flops = train_step_flops(model, digits.train.x[:8], tc)
    after_rng = torch.rand(3)
    assert flops is not None and flops > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_rng)


@pytest.mark.parametrize("n, channels", [(64, 1), (10, 1), (5, 3)], ids=["full-grey", "ragged-grey", "colour"])
def test_sample_grid_is_torchvisions_pixel_for_pixel(tmp_path, n, channels):
    """The train job's sample grid without torchvision (whose import brings torch._dynamo): the same PNG pixels as
    torchvision.utils.save_image for full and ragged last rows, grey and colour images."""
    from PIL import Image
    from torchvision.utils import save_image

    from dgmbench.train import write_image_grid

    x = torch.rand(n, channels, 9, 7, generator=torch.Generator().manual_seed(n))
    write_image_grid(x, tmp_path / "ours.png", nrow=8, padding=2, pad_value=0.5)
    save_image(x, tmp_path / "theirs.png", nrow=8, padding=2, pad_value=0.5)
    ours, theirs = Image.open(tmp_path / "ours.png"), Image.open(tmp_path / "theirs.png")
    assert ours.size == theirs.size and ours.mode == theirs.mode
    assert (np.asarray(ours) == np.asarray(theirs)).all()
