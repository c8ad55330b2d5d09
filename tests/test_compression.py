"""Lossless coding, baselines, lossy points and the normalisation check against analytic answers.

The reference model is a fixed-table autoregressive model on a tiny space (1×2×2 images, 3 levels): p(x_d | x_<d)
is a table indexed by the position and the previous value, so −log₂ p(x) is known exactly and every image can be
enumerated (81 of them).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_ctx, small_info
from dgmbench.distributions import LOG2
from dgmbench.metrics.compression import (
    baseline_sizes,
    code_autoregressive,
    decode_autoregressive,
    encode_autoregressive,
    mosaic,
    positions,
)
from dgmbench.metrics.lossy import jpeg_points, psnr
from dgmbench.metrics.normalisation import enumerate_images, total_probability
from dgmbench.models.base import GenerativeModel, Likelihood


class TableARM(GenerativeModel):
    """p(x) = ∏_d Cat(x_d | softmax(T[d, x_{d−1}])), x_{−1} = a start symbol; raster order as the contract."""

    likelihood = Likelihood.EXACT
    autoregressive = True
    can_sample = True
    Config = dict
    peek = False  # True: the logits at d also see x_d itself (breaks causality; the decoder must then fail)
    log_offset = 0.0  # added to log_prob (an unnormalised "likelihood" for the Σp check)

    def __init__(self, cfg, info, seed=0):
        super().__init__(cfg, info)
        L, D = info.num_levels, info.num_dims
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(2.0 * torch.randn(D, L + 1, L, generator=g))  # (D, previous value or start, L)

    def conditional_logits(self, x):
        B = x.shape[0]
        C, H, W = self.info.shape
        flat = x.long().permute(0, 2, 3, 1).reshape(B, -1)  # (B, D) in raster order, channels within a pixel
        prev = torch.cat([torch.full((B, 1), self.info.num_levels), flat[:, :-1]], 1)  # (B, D)
        if self.peek:
            prev = flat
        logits = self.table[torch.arange(flat.shape[1]), prev]  # (B, D, L)
        return logits.view(B, H, W, C, -1).permute(0, 4, 3, 1, 2)  # (B, L, C, H, W)

    def _log_prob(self, x):
        logp = torch.log_softmax(self.conditional_logits(x), 1)  # (B, L, C, H, W)
        return logp.gather(1, x[:, None]).flatten(1).sum(1) + self.log_offset

    def _sample(self, n):
        x = torch.zeros(n, *self.info.shape, dtype=torch.long)
        for c, h, w in positions(self.info.shape):
            x[:, c, h, w] = torch.distributions.Categorical(logits=self.conditional_logits(x)[:, :, c, h, w]).sample()
        return x


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TableARM({}, small_info(shape=(1, 2, 2), num_levels=3))


def test_positions_follow_the_contract_order():
    assert positions((2, 1, 2)) == [(0, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 1)]


def test_enumeration_lists_every_image_once():
    x = enumerate_images((1, 2, 2), 3)
    assert x.shape == (81, 1, 2, 2)
    assert len({tuple(v.flatten().tolist()) for v in x}) == 81


def test_exact_model_normalises_and_an_unnormalised_one_is_caught(tiny):
    assert total_probability(tiny)["sum_p"] == pytest.approx(1.0, abs=1e-6)
    tiny.log_offset = 0.1
    assert total_probability(tiny)["sum_p"] == pytest.approx(math.exp(0.1), rel=1e-6)


def test_coded_length_is_minus_log2_p_within_a_few_bits(tiny):
    x = tiny.sample(400)
    ideal = float(-tiny.log_prob(x).detach().double().sum()) / LOG2  # analytic −log₂ p of the whole batch
    stream, ideal_coder = encode_autoregressive(tiny, x)
    assert ideal_coder == pytest.approx(ideal, rel=1e-5)
    coded = 32 * len(stream)
    # ANS costs the information content plus at most a couple of 32-bit words for the whole stream (and a
    # negligible loss from quantising the probabilities to the coder's fixed-point precision).
    assert ideal - 1 <= coded <= ideal + 64 + 1e-3 * ideal


def test_single_image_costs_its_information_content(tiny):
    x = torch.tensor([[[[2, 0], [1, 1]]]])
    ideal = float(-tiny.log_prob(x).detach()) / LOG2
    stream, _ = encode_autoregressive(tiny, x)
    assert 32 * len(stream) <= ideal + 64
    decoded, empty = decode_autoregressive(tiny, stream, 1)
    assert torch.equal(decoded, x) and empty


def test_round_trip_is_bit_exact_across_chunks(tiny):
    x = tiny.sample(50)
    res = code_autoregressive(tiny, x, batch_size=16)  # 4 streams
    assert res["round_trip_exact"]
    assert res["coded_bits"] == pytest.approx(res["ideal_bits"], abs=4 * 64)


def test_partial_verification_counts_all_images(tiny):
    x = tiny.sample(40)
    full = code_autoregressive(tiny, x, batch_size=16)
    part = code_autoregressive(tiny, x, batch_size=16, verify_images=20)  # a whole stream and 4 of the next
    assert part["verified_images"] == 20 and part["round_trip_exact"]
    assert part["coded_bits"] == full["coded_bits"] and part["ideal_bits"] == pytest.approx(full["ideal_bits"])


def test_non_causal_model_fails_the_round_trip(tiny):
    """A model whose conditional at d sees x_d gets a short 'code' that cannot be decoded: the check catches it."""
    tiny.peek = True
    x = enumerate_images((1, 2, 2), 3)[:30]
    assert not code_autoregressive(tiny, x, batch_size=30)["round_trip_exact"]


def test_mosaic_is_lossless_through_png():
    from io import BytesIO

    from PIL import Image

    x = torch.randint(0, 17, (10, 1, 8, 8))
    img = mosaic(x)
    assert img.shape == (3 * 8, 4 * 8)  # 10 tiles on a 4-wide grid: 3 rows, 2 blank tiles
    buf = BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    back = np.asarray(Image.open(buf))
    tiles = back.reshape(3, 8, 4, 8).transpose(0, 2, 1, 3).reshape(12, 8, 8)[:10]
    assert np.array_equal(tiles, x[:, 0].numpy())


def test_baselines_respect_the_entropy_and_exploit_redundancy():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 17, (400, 1, 8, 8), generator=g)  # i.i.d. uniform levels: log₂ 17 bits/dim
    sizes, ok = baseline_sizes(noise)
    assert ok  # every baseline decodes back to the same levels
    for name, bpd in sizes.items():
        assert math.log2(17) - 0.05 <= bpd <= 8.5, (name, bpd)
    flat = torch.full((400, 1, 8, 8), 5)
    for name, bpd in baseline_sizes(flat)[0].items():
        assert bpd < 0.2, (name, bpd)


def test_cached_baselines_equal_fresh_ones_and_are_keyed_by_the_images(tmp_path, monkeypatch):
    from dgmbench.metrics import compression

    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(0, 17, (50, 1, 8, 8), generator=g), torch.randint(0, 17, (50, 1, 8, 8), generator=g)
    fresh = baseline_sizes(a)
    assert compression.cached_baseline_sizes(a, str(tmp_path)) == fresh
    assert len(list((tmp_path / "compression").glob("*.json"))) == 1
    calls = []
    monkeypatch.setattr(compression, "baseline_sizes", lambda x: calls.append(x) or fresh)
    assert compression.cached_baseline_sizes(a, str(tmp_path)) == fresh and not calls  # read from the cache
    compression.cached_baseline_sizes(b, str(tmp_path))  # other images: computed, not read
    compression.cached_baseline_sizes(a.reshape(50, 1, 4, 16), str(tmp_path))  # same bytes, other shape
    assert len(calls) == 2
    for entry in (tmp_path / "compression").glob("*.json"):
        entry.write_text("{not json")  # damaged entries are recomputed and replaced
    assert compression.cached_baseline_sizes(a, str(tmp_path)) == fresh and len(calls) == 3
    assert compression.cached_baseline_sizes(a, str(tmp_path)) == fresh and len(calls) == 3


def test_jpeg_trades_rate_for_distortion():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 8, 8, generator=g) * 4).long().cumsum(-1).clamp(max=16)  # ramps: smooth-ish images
    pts = jpeg_points(x, 17, [10, 50, 95])
    bits = [p.bits_per_image for p in pts]
    mses = [p.mse for p in pts]
    assert bits[0] < bits[1] < bits[2]
    assert mses[0] > mses[1] > mses[2] >= 0


def test_psnr_closed_form():
    assert psnr(16.0**2, 17) == pytest.approx(0.0)
    assert psnr(16.0**2 / 100, 17) == pytest.approx(20.0)
    assert psnr(0.0, 17) == math.inf


def test_lossy_evaluator_on_a_model_with_known_rate_and_distortion(digits):
    """reconstruct = x + 0.5 at z = μ (MSE 0.25) and x + 1 at a sampled z (MSE 1), a constant 3 nats of KL: the rate
    is 3/ln2 bits and the distortion it pays for is the sampled one; the z = μ figure is reported beside it."""
    from dgmbench.metrics.lossy import LossyConfig, evaluate_lossy

    class Shifted(GenerativeModel):
        lossy = True
        Config = dict

        def __init__(self, info):
            super().__init__({}, info)
            self.w = nn.Parameter(torch.zeros(1))

        def reconstruct(self, x, sample=False):
            return x.float() + (1.0 if sample else 0.5)

        def latent_rate_nats(self, x):
            return torch.full((x.shape[0],), 3.0)

    ctx = make_ctx(Shifted(digits.info), digits, max_images=100)
    out = evaluate_lossy(ctx, LossyConfig(jpeg_qualities=[50]))
    assert out.num_images == 100 and out.images_sha1 == ctx.subset.indices_sha1
    assert out.rate_bits_per_image == pytest.approx(3.0 / math.log(2))
    assert out.mse == pytest.approx(1.0) and out.mse_stderr == pytest.approx(0.0, abs=1e-12)
    assert out.psnr_db == pytest.approx(10 * math.log10(16**2 / 1.0))
    assert out.mse_at_mean == pytest.approx(0.25)
    assert out.psnr_db_at_mean == pytest.approx(10 * math.log10(16**2 / 0.25))
    assert out.jpeg[0].bits_per_image > 0
    assert type(out).from_dict(out.to_dict()) == out  # the typed result survives metrics.json


def _space_dataset(model):
    """A stand-in dataset whose test split is every image of the model's tiny space."""
    from types import SimpleNamespace

    x = enumerate_images(model.info.shape, model.info.num_levels)
    return SimpleNamespace(info=model.info, test=SimpleNamespace(x=x))


def test_normalisation_evaluator_on_an_exact_family(tiny):
    from dgmbench.metrics.normalisation import NormalisationConfig, evaluate_normalisation

    ctx = make_ctx(tiny, _space_dataset(tiny))
    out = evaluate_normalisation(ctx, NormalisationConfig(spaces=[[1, 2, 2, 3]], toy_train_steps=0))
    assert out.type == "exact"
    assert out.fresh_default.num_images == 81
    assert out.fresh_default.sum_p == pytest.approx(1.0, abs=1e-6)
    assert out.fresh_run_config.sum_p == pytest.approx(out.fresh_default.sum_p)  # the run uses the default config
    assert out.toy_trained is None  # skipped with toy_train_steps = 0
    # The trained checkpoint's own check: changing x_d leaves every conditional at e ≤ d where it was.
    assert out.checkpoint.property == "causal conditionals" and out.checkpoint.passed
    assert out.checkpoint.max_violation == pytest.approx(0.0, abs=1e-9)


def test_normalisation_checkpoint_check_catches_a_leaky_conditional(tiny):
    """A model whose logits at d see x_d itself (peek) fails the trained-checkpoint causality check."""
    from dgmbench.metrics.normalisation import NormalisationConfig, evaluate_normalisation

    tiny.peek = True
    out = evaluate_normalisation(make_ctx(tiny, _space_dataset(tiny)),
                                 NormalisationConfig(spaces=[[1, 2, 2, 3]], toy_train_steps=0, causal_positions=4))
    assert not out.checkpoint.passed and out.checkpoint.max_violation > 0.1


@pytest.mark.parametrize("peek", [False, True])
def test_causality_check_on_8_bit_images(peek):
    """The 28×28 datasets are uint8 with 256 levels, where the check's 'next level' of 255 wraps: it must run on
    them (it divided by zero there) and still tell a causal model from a leaky one."""
    from dgmbench.metrics.normalisation import causality_check

    model = TableARM({}, small_info(shape=(1, 2, 2), num_levels=256)).eval()
    model.peek = peek
    x = torch.tensor([[255, 0, 254, 255], [3, 255, 255, 1]], dtype=torch.uint8).view(2, 1, 2, 2)
    check = causality_check(model, x, num_positions=4)
    assert check.passed is (not peek)
    assert (check.max_violation > 0.1) if peek else check.max_violation == pytest.approx(0.0, abs=1e-12)
