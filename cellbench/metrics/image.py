"""Augmented microscopy (label-free prediction): image similarity after percentile normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.ndimage import uniform_filter

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric

Normalization = Literal["separate", "target", "none"]
SCORE_NAMES: tuple[str, ...] = ("mae", "mse", "psnr", "ssim", "pearson")


@dataclass(frozen=True)
class ImagePairStats:
    """Per-image, per-channel similarity values.

    Attributes:
        values: For each name in :data:`SCORE_NAMES`, a ``(n_channels,)`` float64 array.
        degenerate: Per channel, whether a percentile range was empty and the fallback was used.
    """

    values: dict[str, np.ndarray]
    degenerate: np.ndarray


def percentile_normalize(
    x: np.ndarray, percentiles: tuple[float, float], reference: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """Map the reference's low/high percentiles to 0 and 1 (no clipping).

    Args:
        x: Image to normalise.
        percentiles: ``(low, high)`` percentiles in [0, 100] (linear interpolation).
        reference: Image whose percentiles are used (default: ``x`` itself).

    Returns:
        ``(normalised float64 image, degenerate)``; ``degenerate`` is True when the percentile
        range was empty, in which case the min-max range is used, or for a constant
        reference only the offset is removed.
    """
    ref = x if reference is None else reference
    lo, hi = np.percentile(ref, percentiles)
    scale = hi - lo
    degenerate = not scale > 0
    if degenerate:
        lo, scale = float(ref.min()), float(ref.max() - ref.min())
        if not scale > 0:
            scale = 1.0
    return (x.astype(np.float64) - lo) / scale, degenerate


def ssim(a: np.ndarray, b: np.ndarray, data_range: float, win_size: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) with a uniform window, as scikit-image.

    Same settings as ``skimage.metrics.structural_similarity`` defaults: uniform
    ``win_size``-wide window (``win_size**ndim`` samples), sample covariance, K1 = 0.01,
    K2 = 0.03, reflect padding, mean over the image minus a ``(win_size - 1) // 2`` border.
    Works in 2D and 3D.

    Args:
        a: First image (float).
        b: Second image, same shape.
        data_range: Dynamic range used for the stabilising constants.
        win_size: Odd window width.

    Returns:
        The mean SSIM.
    """
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    n_px = win_size**a.ndim
    cov_norm = n_px / (n_px - 1)
    ux = uniform_filter(a, size=win_size)
    uy = uniform_filter(b, size=win_size)
    uxx = uniform_filter(a * a, size=win_size)
    uyy = uniform_filter(b * b, size=win_size)
    uxy = uniform_filter(a * b, size=win_size)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    inner = tuple(slice(pad, n - pad) for n in s.shape)
    return float(s[inner].mean(dtype=np.float64))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels; NaN if either is constant."""
    x = a.reshape(-1).astype(np.float64)
    y = b.reshape(-1).astype(np.float64)
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt(np.dot(x, x) * np.dot(y, y))
    if not den > 0:
        return float("nan")
    return float(np.clip(np.dot(x, y) / den, -1.0, 1.0))


class ImageSimilarity(Metric[ImagePairStats]):
    r"""MAE, MSE, PSNR, SSIM and Pearson correlation between predicted and target images.

    Each image and channel (inputs shaped ``(c, y, x)`` or ``(c, z, y, x)``) is first
    percentile-normalised, :math:`\hat x = (x - p_{lo}) / (p_{hi} - p_{lo})` with the
    ``percentiles`` (default 0.1 and 99.9, linear interpolation, no clipping), then:

    * ``mae`` = mean :math:`|\hat y - \hat x|` (lower is better, >= 0);
    * ``mse`` = mean :math:`(\hat y - \hat x)^2` (lower is better, >= 0);
    * ``psnr`` = :math:`10 \log_{10}(R^2 / \mathrm{MSE})` dB with :math:`R` = ``data_range``
      (1 after normalisation; higher is better; +inf for a perfect prediction, noted);
    * ``ssim`` = mean SSIM, uniform 7-pixel window (7×7×7 in 3D), K1 = 0.01, K2 = 0.03,
      :math:`R` = ``data_range`` (scikit-image ``structural_similarity`` defaults; in [-1, 1],
      higher is better);
    * ``pearson`` = Pearson correlation of the pixels (in [-1, 1], higher is better; the field's
      standard since Ounkomol et al. 2018); NaN when either image is constant (noted, left
      out of means).

    **Which percentiles normalise the prediction.** With ``normalization="separate"``
    (default) the prediction is normalised by *its own* percentiles and the target by its own:
    fluorescence intensities have no absolute scale across acquisitions and label-free models
    are trained on percentile-normalised targets, so predictions carry an arbitrary gain and
    offset; normalising each image by itself removes that and MAE/MSE/PSNR/SSIM measure
    structure and contrast. ``normalization="target"`` applies the target's percentiles to
    both, so a wrong intensity scale is penalised; ``"none"`` compares raw values (then
    ``data_range`` must be given). Pearson is unaffected by the choice. If a percentile range
    is empty (very sparse image) the min-max range is used instead and a note says so.

    Pooling: per-image values, averaged over images per channel (``<name>/<channel>``) and
    over images and channels (``<name>``).

    Glossary:
        pearson (correlation -1 to 1; quality): Pearson r. Pixel-wise Pearson correlation of
            prediction and target, averaged over images and channels.
        pearson/<channel> (correlation -1 to 1; quality): Pearson r, <channel>. Pixel-wise Pearson
            correlation of the <channel> channel, averaged over images.
        ssim (index -1 to 1; quality): SSIM. Structural similarity (7-pixel window) after percentile
            normalisation, averaged over images and channels.
        ssim/<channel> (index -1 to 1; quality): SSIM, <channel>. Structural similarity of the
            <channel> channel, averaged over images.
        psnr (dB; quality): PSNR. Peak signal-to-noise ratio 10 log10(1 / MSE) after percentile
            normalisation, averaged over images and channels.
        psnr/<channel> (dB; quality): PSNR, <channel>. Peak signal-to-noise ratio of the <channel>
            channel, averaged over images.
        mae (normalised intensity; quality): MAE. Mean absolute difference after percentile
            normalisation (0.1-99.9) of each image, averaged over images and channels.
        mae/<channel> (normalised intensity; quality): MAE, <channel>. Mean absolute difference of
            the <channel> channel after percentile normalisation, averaged over images.
        mse (normalised intensity squared; quality): MSE. Mean squared difference after percentile
            normalisation, averaged over images and channels.
        mse/<channel> (normalised intensity squared; quality): MSE, <channel>. Mean squared
            difference of the <channel> channel after percentile normalisation, averaged over
            images.

    Reference:
        Ounkomol et al., "Label-free prediction of three-dimensional fluorescence images from
        transmitted-light microscopy", Nature Methods 2018; Wang et al., "Image quality
        assessment: from error visibility to structural similarity", IEEE TIP 2004; Light My
        Cells challenge (ISBI 2024).

    Args:
        channel_names: One name per channel (default ``"0"``, ``"1"``, ...).
        percentiles: ``(low, high)`` normalisation percentiles.
        normalization: ``"separate"``, ``"target"`` or ``"none"`` (see above).
        data_range: Dynamic range R for PSNR and SSIM (default 1.0 after normalisation;
            required with ``normalization="none"``).
        ssim_window: Odd SSIM window width (default 7).
    """

    name = "image_similarity"
    lower_is_better = frozenset({"mae", "mse"})

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        percentiles: tuple[float, float] = (0.1, 99.9),
        normalization: Normalization = "separate",
        data_range: float | None = None,
        ssim_window: int = 7,
    ) -> None:
        super().__init__()
        problems = []
        lo, hi = (float(p) for p in percentiles)
        if not 0 <= lo < hi <= 100:
            problems.append(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        if normalization not in ("separate", "target", "none"):
            problems.append(
                f"normalization must be 'separate', 'target' or 'none', got {normalization!r}"
            )
        if normalization == "none" and data_range is None:
            problems.append("normalization='none' needs an explicit data_range")
        if data_range is not None and not data_range > 0:
            problems.append(f"data_range must be > 0, got {data_range!r}")
        if ssim_window < 3 or ssim_window % 2 == 0:
            problems.append(f"ssim_window must be an odd integer >= 3, got {ssim_window}")
        if channel_names is not None and len(set(channel_names)) != len(channel_names):
            problems.append(f"channel names must be unique, got {list(channel_names)}")
        if problems:
            raise ValidationError(problems, "ImageSimilarity parameters")
        self.channel_names = None if channel_names is None else tuple(map(str, channel_names))
        self.percentiles = (lo, hi)
        self.normalization = normalization
        self.data_range = 1.0 if data_range is None else float(data_range)
        self.ssim_window = int(ssim_window)
        self._set_params(
            channel_names=None if self.channel_names is None else list(self.channel_names),
            percentiles=[lo, hi],
            normalization=normalization,
            data_range=self.data_range,
            ssim_window=self.ssim_window,
        )

    def direction(self, value_name: str) -> str:
        """Return ``"higher"`` or ``"lower"`` for a value, including ``<name>/<channel>`` keys."""
        return super().direction(value_name.split("/", 1)[0])

    def _normalize(
        self, pred: np.ndarray, target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        if self.normalization == "none":
            return pred.astype(np.float64), target.astype(np.float64), False
        t, deg_t = percentile_normalize(target, self.percentiles)
        if self.normalization == "separate":
            p, deg_p = percentile_normalize(pred, self.percentiles)
        else:
            p, deg_p = percentile_normalize(pred, self.percentiles, reference=target)
        return p, t, deg_t or deg_p

    def sample_stats(
        self,
        targets: Sequence[np.ndarray],
        predictions: Sequence[np.ndarray],
        *,
        sample_ids: Sequence[str] | None = None,
    ) -> list[ImagePairStats]:
        """Per image and channel, the five scores.

        Args:
            targets: True images, ``(c, y, x)`` or ``(c, z, y, x)``.
            predictions: Predicted images, same shapes.
            sample_ids: Optional ids, used in error messages.

        Returns:
            One :class:`ImagePairStats` per image.

        Raises:
            ValidationError: Listing every problem (shapes, dtypes, non-finite values, images
                smaller than the SSIM window, channel count).
        """
        problems = []
        if len(targets) != len(predictions):
            problems.append(f"{len(targets)} targets but {len(predictions)} predictions")
        if sample_ids is not None and len(sample_ids) != len(targets):
            problems.append(f"{len(sample_ids)} sample ids for {len(targets)} samples")
        if problems:
            raise ValidationError(problems, "ImageSimilarity inputs")
        ids = [str(i) for i in range(len(targets))] if sample_ids is None else list(sample_ids)
        for sid, tgt, pred in zip(ids, targets, predictions, strict=True):
            where = f"sample {sid!r}"
            ok = True
            for role, arr in (("target", tgt), ("prediction", pred)):
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "uif":
                    problems.append(f"{where}: {role} must be a numeric numpy array")
                    ok = False
                elif arr.ndim not in (3, 4):
                    problems.append(
                        f"{where}: {role} must be shaped (c, y, x) or (c, z, y, x), got {arr.shape}"
                    )
                    ok = False
                elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    problems.append(f"{where}: {role} contains NaN or infinite values")
                    ok = False
            if not ok:
                continue
            if tgt.shape != pred.shape:
                problems.append(
                    f"{where}: prediction shape {pred.shape} differs from target {tgt.shape}"
                )
                continue
            if self.channel_names is not None and tgt.shape[0] != len(self.channel_names):
                problems.append(
                    f"{where}: {tgt.shape[0]} channels, expected "
                    f"{len(self.channel_names)} ({list(self.channel_names)})"
                )
            if min(tgt.shape[1:]) < self.ssim_window:
                problems.append(
                    f"{where}: spatial shape {tgt.shape[1:]} is smaller than the "
                    f"SSIM window {self.ssim_window}"
                )
        if problems:
            raise ValidationError(problems, "ImageSimilarity inputs")
        out = []
        for tgt, pred in zip(targets, predictions, strict=True):
            n_c = tgt.shape[0]
            vals = {k: np.zeros(n_c) for k in SCORE_NAMES}
            degenerate = np.zeros(n_c, dtype=bool)
            for c in range(n_c):
                p, t, deg = self._normalize(pred[c], tgt[c])
                diff = p - t
                mse = float(np.mean(diff * diff))
                vals["mae"][c] = float(np.mean(np.abs(diff)))
                vals["mse"][c] = mse
                with np.errstate(divide="ignore"):
                    vals["psnr"][c] = float(
                        10 * np.log10(np.float64(self.data_range) ** 2 / np.float64(mse))
                    )
                vals["ssim"][c] = ssim(p, t, self.data_range, self.ssim_window)
                vals["pearson"][c] = pearson(p, t)
                degenerate[c] = deg
            out.append(ImagePairStats(values=vals, degenerate=degenerate))
        return out

    def _channel_names(self, n: int) -> list[str]:
        return (
            list(self.channel_names)
            if self.channel_names is not None
            else [str(i) for i in range(n)]
        )

    def aggregate(self, stats: Sequence[ImagePairStats]) -> dict[str, float]:
        """Means over images (per channel) and over images and channels.

        Args:
            stats: Per-image records (any subset or multiset).

        Returns:
            ``<name>`` and ``<name>/<channel>`` for mae, mse, psnr, ssim, pearson (NaN values,
            i.e. undefined Pearson, are left out of the means).
        """
        values: dict[str, float] = {}
        if not stats:
            return {k: float("nan") for k in SCORE_NAMES}
        n_c = max(s.values["mae"].size for s in stats)
        names = self._channel_names(n_c)
        for k in SCORE_NAMES:
            mat = np.full((len(stats), n_c), np.nan)
            for i, s in enumerate(stats):
                mat[i, : s.values[k].size] = s.values[k]
            values[k] = _mean_defined(mat.reshape(-1))
            for c, cname in enumerate(names):
                values[f"{k}/{cname}"] = _mean_defined(mat[:, c])
        return values

    def details(self, stats: Sequence[ImagePairStats]) -> dict[str, Any]:
        """Normalisation used and how many channel images were undefined or degenerate."""
        return {
            "normalization": self.normalization,
            "percentiles": list(self.percentiles),
            "data_range": self.data_range,
            "n_images": len(stats),
            "n_pearson_undefined": int(sum(np.isnan(s.values["pearson"]).sum() for s in stats)),
            "n_degenerate_normalization": int(sum(s.degenerate.sum() for s in stats)),
        }

    def notes(self, stats: Sequence[ImagePairStats]) -> list[str]:
        """Normalisation, undefined Pearson, infinite PSNR, degenerate percentile ranges."""
        lo, hi = self.percentiles
        how = {
            "separate": "target and prediction each by their own percentiles",
            "target": "target and prediction both by the target's percentiles",
            "none": "no normalisation",
        }[self.normalization]
        notes = [
            f"Normalisation ({lo}, {hi}) percentiles -> (0, 1): {how}; PSNR and SSIM with "
            f"data_range {self.data_range}."
        ]
        n_nan = int(sum(np.isnan(s.values["pearson"]).sum() for s in stats))
        if n_nan:
            notes.append(
                f"Pearson undefined (a constant image) for {n_nan} image channel(s): "
                "NaN, left out of the means."
            )
        n_inf = int(sum(np.isinf(s.values["psnr"]).sum() for s in stats))
        if n_inf:
            notes.append(
                f"{n_inf} image channel(s) are reproduced exactly (MSE 0): PSNR is +inf "
                "and so is its mean."
            )
        n_deg = int(sum(s.degenerate.sum() for s in stats))
        if n_deg:
            notes.append(
                f"{n_deg} image channel(s) had an empty percentile range; min-max "
                "normalisation was used (or only the offset removed if constant)."
            )
        return notes


def _mean_defined(x: np.ndarray) -> float:
    """Mean over non-NaN entries (+inf kept), NaN if none."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")
