"""Compression, measured: lossless with a real entropy coder, lossy as a rate–distortion point.

Lossless (evaluator ``compression``, which requires ``likelihood``: both score the context's fixed test subset, so
the coded length and the NLL are on the same images). A model with exact per-dimension conditionals p(x_d | x_<d) (an
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

The rate–distortion point of ``lossy`` families is in :mod:`dgmbench.metrics.lossy`; the normalisation check
in :mod:`dgmbench.metrics.normalisation`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..models.base import Likelihood
from . import Result, cached_json, register_evaluator


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
    arr = np.ascontiguousarray(x.to(torch.uint8).numpy())
    key = hashlib.sha1(repr(arr.shape).encode() + arr.tobytes()).hexdigest()
    return cached_json(cache_dir, "compression", key, lambda: baseline_sizes(x),
                       to_json=lambda v: {"sizes": v[0], "round_trip": v[1]},
                       from_json=lambda d: (d["sizes"], d["round_trip"]))


# ----------------------------------------------------------------------------------------- evaluator
@dataclass
class CompressionConfig:
    batch_size: int = 512  # images per coded stream (and per decoding batch)
    verify_images: int = 128  # decode the first n and check the round trip (D network passes each); 0 = all
    cache_dir: str = "results/cache"  # the generic coders' sizes are cached per test set here; "" = no cache

    def validate(self):
        if self.batch_size < 1 or self.verify_images < 0:
            raise ValueError("batch_size must be ≥ 1 and verify_images ≥ 0")


@dataclass
class CompressionResult(Result):
    num_images: int  # test images coded (the context's test subset)
    images_sha1: str  # their index hash
    num_dims: int  # D
    num_levels: int  # L
    uniform_bpd: float  # log₂ L: the code that knows nothing
    baselines: dict[str, float]  # general-purpose coder → bits/dim on the same images (gzip_bpd, png_bpd, ...)
    baselines_round_trip: bool  # every general-purpose coder decoded back to the same bytes
    baseline_storage: str  # how the images were stored for those coders
    model_estimator: str | None  # the likelihood result's estimator (what model_nll_bpd is)
    model_nll_bpd: float | None  # the likelihood result's NLL on the same images, bits/dim
    coded: bool  # a real bitstream was written
    coder: str | None  # which coder, when coded
    reason_short: str | None  # why not, when not coded
    reason: str | None
    coded_bits: int | None  # length of the bitstream in bits (whole 32-bit words)
    coded_bpd: float | None  # coded_bits / (N D)
    ideal_bpd: float | None  # Σ −log₂ p(x) of the coder's own probabilities / (N D), computed while coding
    round_trip_exact: bool | None  # the decoded images equal the originals
    verified_images: int | None  # how many were decoded
    latent_changed_fraction: float | None  # discrete flows: fraction of values with z ≠ x (0 = identity bijection)


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


@register_evaluator("compression", config=CompressionConfig, result=CompressionResult, requires=("likelihood",))
def evaluate_compression(ctx, cfg: CompressionConfig) -> CompressionResult:
    x = ctx.test_x
    N, D = len(x), ctx.dataset.info.num_dims
    baselines, baselines_ok = cached_baseline_sizes(x, cfg.cache_dir)
    lik = ctx.result("likelihood")
    out = CompressionResult(
        num_images=N, images_sha1=ctx.subset.indices_sha1, num_dims=D, num_levels=ctx.dataset.info.num_levels,
        uniform_bpd=math.log2(ctx.dataset.info.num_levels), baselines=baselines, baselines_round_trip=baselines_ok,
        baseline_storage="one byte per value holding the level 0..L-1; PNG/WebP: one greyscale mosaic of all test "
                         "images",
        model_estimator=lik.estimator if lik else None, model_nll_bpd=lik.nll_bpd if lik else None,
        coded=False, coder=None, reason_short=None, reason=None, coded_bits=None, coded_bpd=None, ideal_bpd=None,
        round_trip_exact=None, verified_images=None, latent_changed_fraction=None)
    if ctx.model.autoregressive:
        res = code_autoregressive(ctx.model, x, cfg.batch_size, cfg.verify_images)
        out.coder = "ANS (constriction AnsCoder), categorical conditionals of the model"
    elif ctx.model.discrete_latent:
        res = code_discrete_latent(ctx.model, x, cfg.batch_size, cfg.verify_images)
        out.coder = "ANS (constriction AnsCoder) of z = f(x), group by group with the prior's tables; x = f⁻¹(z)"
        # 0 would mean the learned bijection is the identity and the prior alone does the modelling
        z = ctx.model.to_latent(x.to(ctx.device)).cpu()
        out.latent_changed_fraction = float((z != x.long()).float().mean())
    else:
        out.reason_short, out.reason = no_coder_reason(ctx.model)
        return out
    out.coded = True
    out.coded_bits = int(res["coded_bits"])
    out.coded_bpd, out.ideal_bpd = res["coded_bits"] / (N * D), res["ideal_bits"] / (N * D)
    out.round_trip_exact, out.verified_images = bool(res["round_trip_exact"]), int(res["verified_images"])
    return out
