"""Lossy compression as a rate–distortion point (evaluator ``lossy``, for ``lossy`` families).

The rate is KL(q(z|x) ‖ p(z)) in bits per image: the cost of communicating one *sample* z ~ q(z|x) with
relative-entropy (bits-back) coding — an ideal rate, not a bitstream. The distortion that rate pays for is
therefore that of the decoder at a sampled z ~ q(z|x): ``mse`` / ``psnr_db``. The decoder at the posterior mean
z = μ(x) is the better-looking but optimistic figure (its latent is not what the rate sends); it is reported
beside it as ``mse_at_mean`` / ``psnr_db_at_mean``. MSE is in level units; PSNR = 10 log₁₀((L−1)² / MSE).

JPEG at several qualities on the same images (levels scaled to 0..255, one greyscale mosaic so the header is
shared; 8×8 images sit exactly on JPEG's 8×8 blocks) gives reference points; its bits are the encoded file size.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..distributions import LOG2
from . import Result, register_evaluator
from .compression import _pil_bytes, mosaic


@dataclass
class LossyConfig:
    jpeg_qualities: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 10, 20, 30, 50, 75, 90])  # reference points
    batch_size: int = 512  # test images per forward pass

    def validate(self):
        if any(not 1 <= q <= 100 for q in self.jpeg_qualities):
            raise ValueError(f"jpeg_qualities must lie in 1..100, got {self.jpeg_qualities}")


@dataclass
class JpegPoint(Result):
    quality: int  # JPEG quality setting
    bits_per_image: float  # file size × 8 / images
    mse: float  # level units²
    psnr_db: float


@dataclass
class LossyResult(Result):
    num_images: int  # test images (the context's test subset)
    images_sha1: str  # their index hash
    rate_bits_per_image: float  # mean KL(q(z|x) ‖ p(z)) in bits (ideal relative-entropy coding rate)
    rate_bpd: float  # the same per dimension
    rate_kind: str  # what the rate is
    mse: float  # mean squared error of the decoder mean at z ~ q(z|x), level units² (what the rate pays for)
    mse_stderr: float  # its standard error over the test images (includes the draw of z)
    psnr_db: float  # PSNR at that MSE
    mse_at_mean: float  # the same at z = μ(x) (optimistic: not the latent the rate sends)
    psnr_db_at_mean: float
    beta: float | None  # the KL weight the model was trained with, where it has one
    jpeg: list[JpegPoint]  # reference points on the same images


def psnr(mse: float, num_levels: int) -> float:
    """Peak signal-to-noise ratio in dB for an MSE in level units: 10 log₁₀((L−1)² / MSE)."""
    return math.inf if mse == 0 else 10.0 * math.log10((num_levels - 1) ** 2 / mse)


def jpeg_points(x: torch.Tensor, num_levels: int, qualities: list[int]) -> list[JpegPoint]:
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
        points.append(JpegPoint(q, 8.0 * len(data) / N, mse, psnr(mse, num_levels)))
    return points


@register_evaluator("lossy", config=LossyConfig, result=LossyResult)
def evaluate_lossy(ctx, cfg: LossyConfig) -> LossyResult | None:
    model = ctx.model
    if not model.lossy:
        return None
    x = ctx.test_x
    L = ctx.dataset.info.num_levels
    rates, sq, sq_mean = [], [], []
    with torch.no_grad():
        for i in range(0, len(x), cfg.batch_size):
            xb = x[i : i + cfg.batch_size].to(ctx.device)
            target = xb.double().cpu()
            rates.append(model.latent_rate_nats(xb).double().cpu())  # (B,) nats
            for out, sample in ((sq, True), (sq_mean, False)):
                rec = model.reconstruct(xb, sample=sample).double().cpu()  # (B, C, H, W) level units
                out.append(((rec - target) ** 2).flatten(1).mean(1))  # (B,) per-image MSE
    rate_bits = float(torch.cat(rates).mean()) / LOG2
    per_image = torch.cat(sq)
    mse, mse_mean = float(per_image.mean()), float(torch.cat(sq_mean).mean())
    return LossyResult(
        num_images=len(x), images_sha1=ctx.subset.indices_sha1,
        rate_bits_per_image=rate_bits, rate_bpd=rate_bits / ctx.dataset.info.num_dims,
        rate_kind="KL(q(z|x) || p(z)) in bits (relative-entropy / bits-back rate of a sample z ~ q; no bitstream)",
        mse=mse, mse_stderr=float(per_image.std(unbiased=True) / math.sqrt(len(per_image))) if len(x) > 1 else 0.0,
        psnr_db=psnr(mse, L), mse_at_mean=mse_mean, psnr_db_at_mean=psnr(mse_mean, L),
        beta=getattr(ctx.model.cfg, "beta", None), jpeg=jpeg_points(x, L, cfg.jpeg_qualities),
    )
