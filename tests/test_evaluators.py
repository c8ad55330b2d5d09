"""The evaluation contract, parametrised over the evaluator registry: every evaluator runs on every registered
model it applies to (fresh models on digits, the cheapest settings), returns its declared Result type, and that
result survives metrics.json (to_dict → JSON → from_dict is the identity). Plus the runner's dependency order and
the import hygiene of the configuration module."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import TINY_EVAL, make_ctx
from dgmbench.config import eval_settings
from dgmbench.metrics import EVALUATORS, ResultError, plan
from dgmbench.models import MODELS, get_model


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    grid = {"eval": {**TINY_EVAL, "sample_quality": {**TINY_EVAL["sample_quality"], "cache_dir": cache},
                     "compression": {**TINY_EVAL["compression"], "cache_dir": cache}}}
    return eval_settings(grid)


def _nan_to_none(obj):
    """What json.dumps/loads does to a result, minus NaN (not JSON; metrics.json writes it, strict readers reject)."""
    return json.loads(json.dumps(obj, default=float))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_evaluator_runs_on_every_model_and_round_trips(name, digits, settings):
    torch.manual_seed(0)
    model = get_model(name, digits.info).eval()
    ctx = make_ctx(model, digits, max_images=settings["test_subset"].max_images)
    applied = []
    for ev in plan():
        result = ev.fn(ctx, settings[ev.name])
        if result is None:
            continue
        applied.append(ev.name)
        assert isinstance(result, ev.Result), (ev.name, type(result))
        ctx.results[ev.name] = result
        back = ev.Result.from_dict(_nan_to_none(result.to_dict()), where=ev.name)
        assert _nan_to_none(back.to_dict()) == _nan_to_none(result.to_dict()), ev.name
    cls = MODELS.get(name)
    # What applies follows from the declarations, not from the family's name.
    assert ("sampling" in applied) == cls.can_sample and ("sample_quality" in applied) == cls.can_sample
    assert ("probe" in applied) == cls.can_embed and ("lossy" in applied) == cls.lossy
    assert ("ood" in applied) == ("normalisation" in applied) == (cls.likelihood.value != "none")
    assert {"training", "likelihood", "compression"} <= set(applied)
    lik = ctx.results["likelihood"]
    if lik.type != "none":
        assert math.isfinite(lik.nll_nats) and lik.num_images == ctx.subset.num_images
        if lik.type == "exact":
            assert lik.stderr_nats == 0.0 and lik.repeats == 1
        else:  # stochastic: a positive s.e. (from ≥ 2 repeats, or one draw's jackknife), or None (never 0) without
            assert (lik.stderr_nats is None) == (lik.stderr_method is None)
            assert lik.stderr_nats is None or lik.stderr_nats > 0
            assert lik.stderr_method is None or lik.repeats >= 2 or lik.stderr_method.startswith("jackknife")
    comp = ctx.results["compression"]
    assert comp.images_sha1 == lik.images_sha1 and comp.model_nll_bpd == lik.nll_bpd  # same images, same number


def test_plan_orders_by_requires_and_adds_what_is_required():
    names = [e.name for e in plan()]
    assert names.index("likelihood") < names.index("compression")
    assert [e.name for e in plan(["compression"])] == ["likelihood", "compression"]
    assert set(names) == set(EVALUATORS.names())


def test_a_malformed_section_names_its_field():
    from dgmbench.metrics import parse_section

    with pytest.raises(ResultError, match="likelihood lacks field 'nll_nats'"):
        parse_section("likelihood", {"type": "exact", "estimator": "exact"})
    with pytest.raises(ResultError, match="unknown field 'nll'"):
        parse_section("training", {"nll": 1})
    with pytest.raises(ResultError, match="must be a number"):
        parse_section("lossy", {**dataclasses.asdict(_lossy()), "mse": "small"})


def _lossy():
    from dgmbench.metrics.lossy import LossyResult

    return LossyResult(1, "x", 1.0, 1.0, "KL", 1.0, 0.0, 1.0, 1.0, 1.0, None, [])


def test_importing_the_config_imports_no_model_or_metric():
    """The configuration layer stands below models and metrics: no import circle held together by late imports."""
    code = ("import sys, dgmbench.config; bad = sorted(m for m in sys.modules if m.startswith(('dgmbench.models', "
            "'dgmbench.metrics', 'dgmbench.train', 'dgmbench.evaluate', 'dgmbench.tables', 'torch'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_evaluate_does_not_import_the_trainer():
    code = "import sys, dgmbench.evaluate; print('dgmbench.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
