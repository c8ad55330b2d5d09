"""Compression, measured: lossless with a real entropy coder, lossy as a rate–distortion point.

Lossless (evaluator ``compression``). A model with exact per-dimension conditionals p(x_d | x_<d) (an
``autoregressive`` family) is an entropy coder: with asymmetric numeral systems (ANS, Duda 2013; the
``constriction`` library's ``AnsCoder``) an image costs −Σ_d log₂ p(x_d | x_<d) bits plus a constant of at most
a few machine words for the whole stream. We *encode* the test split from one teacher-forced pass of
``conditional_logits`` (every conditional at once), *decode* it position by position — each step runs the
network on the partially decoded batch and pops one symbol per image — and check that the round trip is
bit-exact. Decoding costs D network passes, so by default the first ``verify_images`` test images are decoded
(digits: 128 of 447, ~5 s on one CPU core); ``verify_images: 0`` decodes all. Encoder and decoder quantise the same float64 probabilities (softmax of the logits in float64 on the
CPU), so the integer tables constriction builds are identical on both sides as long as the network computes the
same logits from the same prefix (the contract's causality). The coded size is the length of the bitstream.

ANS is a stack (last in, first out), so the symbols are pushed position-major and in reverse: for positions
d = D−1..0, images n = B−1..0; the decoder then pops position 0 of every image, then position 1, and so on.

A ``discrete_latent`` family (the discrete flow ``idf``) is coded the same way through its bijection: z = f(x)
is pushed group by group, each group with the tables its prior computes from the earlier groups, and the decoder
pops group after group (one prior pass each) and returns x = f⁻¹(z). A bijection of the integer images has no
Jacobian, so the ideal length is −log₂ P(x) exactly.

The other families get no bitstream, with the reason: a continuous flow on dequantised data needs bits-back
coding with dequantisation, a VAE needs bits-back coding of its latent (BB-ANS). Neither is implemented here;
their ideal rates are their NLL bounds in bits/dim.

Every run also reports general-purpose lossless coders on the same images, stored as one byte per value holding
the level 0..L−1 (raw bytes for gzip/lzma; one greyscale mosaic of all test images, 8-bit samples holding the
levels, for PNG and lossless WebP — a per-image PNG would be mostly header). Their bits/dim use the same D.

Lossy (evaluator ``lossy``, for ``lossy`` families): the rate is KL(q(z|x) ‖ p(z)) in bits per image, the cost
of communicating a sample of q(z|x) with relative-entropy / bits-back coding (an ideal rate, not a bitstream);
the distortion is the MSE of ``reconstruct(x)`` in level units and the PSNR, 10 log₁₀((L−1)² / MSE). JPEG at
several qualities on the same images (levels scaled to 0..255, one greyscale mosaic so the header is shared;
8×8 images sit exactly on JPEG's 8×8 blocks) gives reference points; its bits are the encoded file size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..distributions import LOG2
from ..models.base import Likelihood
from . import register_evaluator


# ------------------------------------------------------------------------------------------ ANS coding
def _categorical_family():
    import constriction

    # perfect=False: fast, deterministic quantisation of the float probabilities into the coder's integer
    # table; encoder and decoder must use the same setting (they do: this one function).
    return constriction.stream.model.Categorical(perfect=False)


def positions(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The coding order of the contract: raster over (h, w), channels 0..C−1 within a pixel → [(c, h, w)]."""
    C, H, W = shape
    return [(c, h, w) for h in range(H) for w in range(W) for c in range(C)]


def _probs(logits: torch.Tensor) -> np.ndarray:
    """Logits (..., L) → float64 probabilities on the CPU (the exact numbers both sides hand to the coder)."""
    return torch.softmax(logits.detach().to("cpu", torch.float64), dim=-1).numpy()


@torch.no_grad()
def encode_autoregressive(model, x: torch.Tensor) -> tuple[np.ndarray, float]:
    """Encode a batch of images with the model's conditionals.

    Args:
        model: an ``autoregressive`` model (``conditional_logits(x)`` → (B, L, C, H, W)).
        x: (B, C, H, W) integer levels.
    Returns:
        (the compressed stream as uint32 words, the ideal length −Σ log₂ p in bits from the same probabilities).
    """
    x = x.long()
    logits = model.conditional_logits(x.to(model.device))  # (B, L, C, H, W), one teacher-forced pass
    probs = _probs(logits.permute(3, 4, 2, 0, 1))  # (H, W, C, B, L): position-major in raster order
    L = probs.shape[-1]
    probs = np.ascontiguousarray(probs.reshape(-1, L))  # (D·B, L)
    symbols = x.permute(2, 3, 1, 0).reshape(-1).numpy().astype(np.int32)  # (D·B,) same order
    return _encode(probs, symbols)


def _encode(probs: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, float]:
    """ANS-encode ``symbols`` (N,) under the rows of ``probs`` (N, L), in reverse so the decoder pops symbol 0
    first; returns (the stream as uint32 words, the ideal length −Σ log₂ p in bits)."""
    import constriction

    ideal_bits = float(-np.log2(probs[np.arange(len(symbols)), symbols]).sum())
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _categorical_family(), probs)
    return coder.get_compressed(), ideal_bits


@torch.no_grad()
def decode_autoregressive(model, compressed: np.ndarray, num_images: int) -> tuple[torch.Tensor, bool]:
    """Decode ``num_images`` images position by position; returns ((B, C, H, W) int64 levels, stream empty?)."""
    import constriction

    coder = constriction.stream.stack.AnsCoder(compressed)
    family = _categorical_family()
    x = torch.zeros(num_images, *model.info.shape, dtype=torch.long, device=model.device)  # (B, C, H, W)
    for c, h, w in positions(model.info.shape):
        # The logits at (c, h, w) depend only on positions decoded before it (the zeros elsewhere are ignored).
        p = _probs(model.conditional_logits(x)[:, :, c, h, w])  # (B, L)
        x[:, c, h, w] = torch.from_numpy(coder.decode(family, p).astype(np.int64)).to(x.device)
    return x.cpu(), bool(coder.is_empty())


@torch.no_grad()
def _group_probs(log_pmf: torch.Tensor, group: torch.Tensor) -> np.ndarray:
    """(B, L, C, H, W) log-pmfs, (C, H, W) boolean group → (P·B, L) float64 probabilities of the group's P
    positions, position-major (the order ``_group_values`` reads and writes the symbols in)."""
    return _probs(log_pmf.permute(2, 3, 4, 0, 1)[group.cpu()].reshape(-1, log_pmf.shape[1]))


def _group_values(z: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(P, B) values of ``z`` (B, C, H, W) at the group's positions, position-major (a copy)."""
    return z.permute(1, 2, 3, 0)[group]


@torch.no_grad()
def encode_discrete_latent(model, x: torch.Tensor) -> tuple[np.ndarray, float]:
    """Encode a batch through a discrete flow: z = f(x), then z group by group with the prior's tables.

    Args:
        model: a ``discrete_latent`` model.
        x: (B, C, H, W) integer levels.
    Returns:
        (the compressed stream as uint32 words, the ideal length −Σ log₂ P(z) in bits from the same probabilities).
    """
    z = model.to_latent(x.long().to(model.device))
    probs, symbols = [], []
    for g, group in enumerate(model.latent_groups):
        # Group g's tables read only groups < g of z, exactly what the decoder has when it reaches g.
        probs.append(_group_probs(model.latent_log_pmf(z, g), group))
        symbols.append(_group_values(z, group.to(z.device)).reshape(-1).cpu().numpy().astype(np.int32))
    return _encode(np.ascontiguousarray(np.concatenate(probs)), np.concatenate(symbols))


@torch.no_grad()
def decode_discrete_latent(model, compressed: np.ndarray, num_images: int) -> tuple[torch.Tensor, bool]:
    """Decode z group by group (one prior pass each), then x = f⁻¹(z); returns ((B, C, H, W) levels, stream empty?)."""
    import constriction

    coder = constriction.stream.stack.AnsCoder(compressed)
    family = _categorical_family()
    z = torch.zeros(num_images, *model.info.shape, dtype=torch.long, device=model.device)  # (B, C, H, W)
    for g, group in enumerate(model.latent_groups):
        p = _group_probs(model.latent_log_pmf(z, g), group)  # (P·B, L)
        values = torch.from_numpy(coder.decode(family, p).astype(np.int64)).to(z.device)
        z.permute(1, 2, 3, 0)[group.to(z.device)] = values.view(-1, num_images)  # the inverse of _group_values
    return model.from_latent(z).cpu(), bool(coder.is_empty())


def code_streams(encode, decode, x: torch.Tensor, batch_size: int, verify_images: int = 0) -> dict:
    """Encode ``x`` in streams of ``batch_size`` images; decode and compare the first ``verify_images`` (0 = all).

    ``encode(xb)`` → (stream, ideal bits) and ``decode(stream, num_images)`` → (images, stream empty?) are one
    model's coder (``encode_autoregressive``/``decode_autoregressive`` or the discrete-latent pair). A stream
    verified whole is decoded as stored; when only the first k images of a stream are to be verified, those k are
    encoded again (same model, same probabilities) into their own stream, which is decoded. The coded size always
    counts the full streams.
    """
    n_verify = len(x) if verify_images <= 0 else min(verify_images, len(x))
    coded_bits, ideal_bits, exact = 0, 0.0, True
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].long().cpu()
        stream, ideal = encode(xb)
        coded_bits += 32 * len(stream)  # the stored stream: whole 32-bit words
        ideal_bits += ideal
        k = min(len(xb), n_verify - i)  # images of this stream still to verify
        if k > 0:
            check = stream if k == len(xb) else encode(xb[:k])[0]
            decoded, is_empty = decode(check, k)
            exact &= bool(torch.equal(decoded, xb[:k])) and is_empty
    return {"coded_bits": coded_bits, "ideal_bits": ideal_bits, "round_trip_exact": exact,
            "verified_images": n_verify}


def code_autoregressive(model, x: torch.Tensor, batch_size: int, verify_images: int = 0) -> dict:
    """ANS-code ``x`` with an ``autoregressive`` model's conditionals (see :func:`code_streams`)."""
    return code_streams(lambda xb: encode_autoregressive(model, xb),
                        lambda stream, k: decode_autoregressive(model, stream, k), x, batch_size, verify_images)


def code_discrete_latent(model, x: torch.Tensor, batch_size: int, verify_images: int = 0) -> dict:
    """ANS-code ``x`` through a ``discrete_latent`` model's bijection and prior (see :func:`code_streams`)."""
    return code_streams(lambda xb: encode_discrete_latent(model, xb),
                        lambda stream, k: decode_discrete_latent(model, stream, k), x, batch_size, verify_images)


# ------------------------------------------------------------------------------ general-purpose coders
def mosaic(x: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """(N, C, H, W) levels → one (rows·H, cols·W[, C]) uint8 image of all N tiles (blank tiles at the end).

    ``scale`` multiplies the levels (1 stores the levels themselves; 255/(L−1) spreads them over 0..255).
    """
    N, C, H, W = x.shape
    cols = math.ceil(math.sqrt(N))
    rows = math.ceil(N / cols)
    grid = np.zeros((rows * cols, C, H, W), dtype=np.float64)
    grid[:N] = x.double().numpy() * scale
    img = grid.reshape(rows, cols, C, H, W).transpose(0, 3, 1, 4, 2).reshape(rows * H, cols * W, C)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img[..., 0] if C == 1 else img


def _pil_bytes(img: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def baseline_sizes(x: torch.Tensor) -> tuple[dict, bool]:
    """Bits/dim of general-purpose lossless coders on ``x`` (N, C, H, W) stored as one byte per level value, and
    whether every one of them decoded back to the same bytes."""
    from PIL import Image

    N = x.shape[0]
    dims = N * x[0].numel()
    raw = x.to(torch.uint8).numpy().tobytes()  # N·C·H·W bytes, the levels themselves
    img = mosaic(x)
    coded = {
        "gzip": gzip.compress(raw, compresslevel=9, mtime=0),
        "lzma": lzma.compress(raw, preset=9),
        "png": _pil_bytes(img, "PNG", optimize=True),
        "webp_lossless": _pil_bytes(img, "WEBP", lossless=True, quality=100, method=6),
    }
    ok = gzip.decompress(coded["gzip"]) == raw and lzma.decompress(coded["lzma"]) == raw
    for key in ("png", "webp_lossless"):
        back = np.asarray(Image.open(io.BytesIO(coded[key])).convert(Image.fromarray(img).mode))
        ok &= bool(np.array_equal(back, img))
    return {f"{k}_bpd": 8.0 * len(v) / dims for k, v in coded.items()}, ok


def cached_baseline_sizes(x: torch.Tensor, cache_dir: str) -> tuple[dict, bool]:
    """:func:`baseline_sizes`, kept in ``<cache_dir>/compression/<sha1 of the images>.json``.

    The baselines depend on the test images only, yet every run of a dataset asks for them (WebP at method 6
    takes ~10 s for 200 28×28 images). The key is a hash of the exact bytes and shape, so other images never
    read a stale entry; the file is written atomically, so parallel jobs at worst compute it twice.
    """
    if not cache_dir:
        return baseline_sizes(x)
    arr = np.ascontiguousarray(x.to(torch.uint8).numpy())
    key = hashlib.sha1(repr(arr.shape).encode() + arr.tobytes()).hexdigest()
    path = Path(cache_dir) / "compression" / f"{key}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            return cached["sizes"], cached["round_trip"]
        except (json.JSONDecodeError, KeyError):
            pass  # a damaged entry is recomputed and replaced
    sizes, ok = baseline_sizes(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sizes": sizes, "round_trip": ok}))
    os.replace(tmp, path)
    return sizes, ok


# ----------------------------------------------------------------------------------------- evaluators
@dataclass
class CompressionConfig:
    batch_size: int = 512  # images per coded stream (and per decoding batch)
    max_images: int = 0  # code only the first n test images; 0 = all
    verify_images: int = 128  # decode the first n and check the round trip (D network passes each); 0 = all
    cache_dir: str = "results/cache"  # the generic coders' sizes are cached per test set here; "" = no cache

    def validate(self):
        if self.batch_size < 1 or self.max_images < 0 or self.verify_images < 0:
            raise ValueError("batch_size must be ≥ 1, max_images and verify_images ≥ 0")


def no_coder_reason(model) -> tuple[str, str]:
    """(short, full) reason why a family gets no bitstream here, read from its declared capabilities."""
    if model.likelihood is Likelihood.NONE:
        return "no likelihood", "no likelihood: there is no probability model to drive an entropy coder"
    if model.lossy:
        return "needs bits-back", ("latent-variable model: lossless coding needs bits-back coding of the latent "
                                   "(BB-ANS), not implemented; the ideal rate is the NLL bound")
    if model.likelihood is Likelihood.EXACT:
        return "no coder", ("exact likelihood but neither per-dimension conditionals nor a discrete latent: no "
                            "entropy coder is wired for it; the ideal rate is the NLL")
    return "needs bits-back", ("likelihood is a bound without per-dimension conditionals: needs bits-back coding, "
                               "not implemented; the ideal rate is the NLL bound")


@register_evaluator("compression", config=CompressionConfig, order=40)
def evaluate_compression(ctx, cfg: CompressionConfig) -> dict:
    x = ctx.dataset.test.x[: cfg.max_images or None]
    N, D = len(x), ctx.dataset.info.num_dims
    baselines, baselines_ok = cached_baseline_sizes(x, cfg.cache_dir)
    out: dict = {"num_images": N, "num_dims": D, "num_levels": ctx.dataset.info.num_levels,
                 "uniform_bpd": math.log2(ctx.dataset.info.num_levels),
                 "baselines": baselines, "baselines_round_trip": baselines_ok,
                 "baseline_storage": "one byte per value holding the level 0..L-1; PNG/WebP: one greyscale mosaic "
                                     "of all test images"}
    lik = ctx.metrics.get("likelihood", {})
    out["model_nll_bpd"] = lik.get("nll_bpd")
    if ctx.model.autoregressive:
        res = code_autoregressive(ctx.model, x, cfg.batch_size, cfg.verify_images)
        coder = "ANS (constriction AnsCoder), categorical conditionals of the model"
    elif ctx.model.discrete_latent:
        res = code_discrete_latent(ctx.model, x, cfg.batch_size, cfg.verify_images)
        coder = "ANS (constriction AnsCoder) of z = f(x), group by group with the prior's tables; x = f⁻¹(z)"
        # 0 would mean the learned bijection is the identity and the prior alone does the modelling
        z = ctx.model.to_latent(x.to(ctx.device)).cpu()
        out["latent_changed_fraction"] = float((z != x.long()).float().mean())
    else:
        short, full = no_coder_reason(ctx.model)
        out.update(coded=False, reason_short=short, reason=full)
        return out
    out.update(coded=True, coder=coder,
               coded_bpd=res["coded_bits"] / (N * D), ideal_bpd=res["ideal_bits"] / (N * D),
               round_trip_exact=res["round_trip_exact"], verified_images=res["verified_images"],
               coded_bits=res["coded_bits"])
    return out


@dataclass
class LossyConfig:
    jpeg_qualities: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 10, 20, 30, 50, 75, 90])  # reference points
    batch_size: int = 512  # test images per forward pass

    def validate(self):
        if any(not 1 <= q <= 100 for q in self.jpeg_qualities):
            raise ValueError(f"jpeg_qualities must lie in 1..100, got {self.jpeg_qualities}")


def psnr(mse: float, num_levels: int) -> float:
    """Peak signal-to-noise ratio in dB for an MSE in level units: 10 log₁₀((L−1)² / MSE)."""
    return math.inf if mse == 0 else 10.0 * math.log10((num_levels - 1) ** 2 / mse)


def jpeg_points(x: torch.Tensor, num_levels: int, qualities: list[int]) -> list[dict]:
    """Rate (bits/image from the file size) and distortion (MSE in level units) of greyscale JPEG on ``x``."""
    from PIL import Image

    N, C, H, W = x.shape
    scale = 255.0 / (num_levels - 1)
    img = mosaic(x, scale)
    ref = img.astype(np.float64) / scale  # the levels, back in level units, in the mosaic layout
    cols = math.ceil(math.sqrt(N))
    valid = np.zeros((math.ceil(N / cols) * cols,), dtype=bool)
    valid[:N] = True  # blank padding tiles do not count
    mask = np.repeat(np.repeat(valid.reshape(-1, cols), H, 0), W, 1)
    if C > 1:
        mask = mask[..., None].repeat(C, -1)
    points = []
    for q in qualities:
        data = _pil_bytes(img, "JPEG", quality=q, optimize=True)
        dec = np.asarray(Image.open(io.BytesIO(data))).astype(np.float64) / scale
        mse = float(((dec - ref) ** 2)[mask].mean())
        points.append({"quality": q, "bits_per_image": 8.0 * len(data) / N, "mse": mse, "psnr_db": psnr(mse, num_levels)})
    return points


@register_evaluator("lossy", config=LossyConfig, order=41)
def evaluate_lossy(ctx, cfg: LossyConfig) -> dict | None:
    model = ctx.model
    if not model.lossy:
        return None
    x = ctx.dataset.test.x
    L = ctx.dataset.info.num_levels
    rates, sq = [], []
    with torch.no_grad():
        for i in range(0, len(x), cfg.batch_size):
            xb = x[i : i + cfg.batch_size].to(ctx.device)
            rates.append(model.latent_rate_nats(xb).double().cpu())  # (B,) nats
            rec = model.reconstruct(xb).double().cpu()  # (B, C, H, W) level units
            sq.append(((rec - xb.double().cpu()) ** 2).flatten(1).mean(1))  # (B,) per-image MSE
    rate_bits = float(torch.cat(rates).mean()) / LOG2
    mse = float(torch.cat(sq).mean())
    return {
        "rate_bits_per_image": rate_bits,
        "rate_bpd": rate_bits / ctx.dataset.info.num_dims,
        "mse": mse,
        "psnr_db": psnr(mse, L),
        "rate_kind": "KL(q(z|x) || p(z)) in bits (relative-entropy / bits-back rate; no bitstream)",
        "beta": getattr(ctx.run.hparams, "beta", None),
        "jpeg": jpeg_points(x, L, cfg.jpeg_qualities),
    }


# ------------------------------------------------------------------------- normalisation on a toy space
# A code's lengths ℓ(x) = −log₂ p(x) are realisable (Kraft) iff Σ_x p(x) ≤ 1, and waste nothing iff Σ_x p(x) = 1:
# a family that claims an exact likelihood must normalise. On a space small enough to enumerate every image
# (3 levels on 1×2×2: 81 images) we sum exp(log_prob) over all of them — for a freshly initialised model with the
# family's default config and for one with the trained run's config (trained weights do not fit the toy shape;
# normalisation is a property of the architecture, not of the weights). Bound families must give Σ ≤ 1.
@dataclass
class NormalisationConfig:
    spaces: list[list[int]] = field(default_factory=lambda: [[1, 2, 2, 3], [1, 4, 4, 2]])  # [C, H, W, levels], first that builds
    bound_repeats: int = 4  # stochastic bounds (ELBO, VLB) are averaged over this many draws per image
    iwae_k: int = 256  # importance samples for the IWAE-k sum (supports_iwae families)

    def validate(self):
        if any(len(s) != 4 or min(s) < 1 or s[3] < 2 for s in self.spaces):
            raise ValueError(f"spaces must be [C, H, W, levels] with levels ≥ 2, got {self.spaces}")
        if self.bound_repeats < 1 or self.iwae_k < 1:
            raise ValueError("bound_repeats and iwae_k must be ≥ 1")


def enumerate_images(shape: tuple[int, int, int], num_levels: int) -> torch.Tensor:
    """Every image of ``shape`` with values 0..L−1: (L^D, C, H, W) int64, the first dimension varying slowest."""
    D = shape[0] * shape[1] * shape[2]
    grids = torch.cartesian_prod(*[torch.arange(num_levels)] * D) if D > 1 else torch.arange(num_levels)[:, None]
    return grids.reshape(-1, *shape).long()


@torch.no_grad()
def total_probability(model, *, bound_repeats: int = 1, iwae_k: int = 0, batch_size: int = 4096) -> dict:
    """Σ_x exp(log_prob(x)) over every image of ``model.info`` (and Σ exp(IWAE-k) with ``iwae_k``), in float64.

    ``bound_repeats`` > 1 averages a stochastic bound's log-value over draws before exponentiating (the ELBO is
    an expectation; one draw can exceed log p(x)), so ``sum_p`` ≤ 1 for a valid bound. ``sum_p_iwae`` is not a
    bound: exp(IWAE-k) is an unbiased, heavy-tailed estimate of p(x), so its sum estimates Σp = 1 (noisily).
    """
    x = enumerate_images(model.info.shape, model.info.num_levels)
    log_p, log_iwae = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(model.device)
        draws = torch.stack([model.log_prob(xb).double().cpu() for _ in range(bound_repeats)])  # (R, B)
        log_p.append(draws.mean(0))
        if iwae_k:
            log_iwae.append(model.log_prob_iwae(xb, iwae_k).double().cpu())
    out = {"num_images": len(x), "sum_p": float(torch.cat(log_p).exp().sum())}
    if iwae_k:
        out["sum_p_iwae"] = float(torch.cat(log_iwae).exp().sum())
    return out


@register_evaluator("normalisation", config=NormalisationConfig, order=15)
def evaluate_normalisation(ctx, cfg: NormalisationConfig) -> dict | None:
    """Σp over an enumerable toy space for the family's default config and for the run's config."""
    from ..data import DatasetInfo

    cls = type(ctx.model)
    if cls.likelihood is Likelihood.NONE:
        return None
    bound = cls.likelihood is Likelihood.BOUND
    out: dict = {"type": cls.likelihood.value}
    for label, hparams in (("fresh_default", cls.Config()), ("fresh_run_config", ctx.model.cfg)):
        if label == "fresh_run_config" and hparams == cls.Config():
            out[label] = {**out["fresh_default"], "same_as": "fresh_default"}  # the run uses the defaults
            continue
        errors = []
        for C, H, W, L in cfg.spaces:
            info = DatasetInfo(f"toy-{C}x{H}x{W}-{L}", (C, H, W), L, 1, "every image of a tiny space")
            try:
                model = cls(hparams, info).to(ctx.device).eval()
            except Exception as err:  # an architecture that cannot be built this small; try the next space
                errors.append(f"{C}x{H}x{W}/{L}: {type(err).__name__}: {err}")
                continue
            res = total_probability(model, bound_repeats=cfg.bound_repeats if bound else 1,
                                    iwae_k=cfg.iwae_k if cls.supports_iwae else 0)
            out[label] = {"space": [C, H, W, L], **res}
            break
        else:
            out[label] = {"space": None, "error": "; ".join(errors)}
    return out
