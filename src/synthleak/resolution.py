"""The finest scale a synthetic set carries, measured from its spectrum: compare reals with it there, never finer.

A generator trained at 32 px and upsampled to 256 (a diffusion model on a CPU budget, a GAN at 128)
reproduces its training images only down to its own resolution. Compared at a finer scale, a
blurred reproduction of a training slice is far from that slice's sharp details, and a nearest-
distance attack measures blur instead of membership. The scale is read off the images alone, with no
label: the radially averaged power spectrum of a sample of synthetic images divided by that of the
real images (labelled and test pooled). Where the generator resolves the anatomy the ratio stays near
1 (or above, for noise); past its resolution it drops by orders of magnitude (interpolation puts
almost no power there, apart from small replicas of the spectrum). The cutoff is the first spatial
frequency (cycles per image) where the ratio falls below RATIO_FLOOR: area-downsampling to s px and
interpolating back (linear or cubic) leaves 10-40% of the power at s/2 cycles and a few percent just
past it, on CT slices and on phantoms alike, so the first crossing of RATIO_FLOOR lands near s/2 while the
replicas further up, which can rise above a lower floor, are never reached. The effective side is
twice the cutoff (Nyquist), capped at the image side. Nearest-neighbour
upsampling from s px keeps power at high frequencies (replicas of the spectrum) but leaves notches at
every multiple of s cycles per image; those notches give the side directly.

Comparisons then happen at `comparison_side`: the largest of COMPARISON_SIDES not finer than the
effective side and not above MAX_COMPARISON_SIDE (64 px: the scale the project's pixel baseline and
default were chosen at; sharper sets keep it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as scipy_fft

#: synthetic / real power ratio below which a frequency counts as not carried by the synthetic set
RATIO_FLOOR = 0.12
#: images per set whose spectra are averaged (a seeded sample; spectra of a few hundred CT slices are stable)
SAMPLE_IMAGES = 256
#: pixel sides the comparisons may use (area-downsampled pixels), coarsest first
COMPARISON_SIDES = (8, 12, 16, 24, 32, 48, 64)
MAX_COMPARISON_SIDE = 64
#: lowest frequencies (cycles per image) ignored by the cutoff: the window and the mean dominate them
LOWEST_FREQUENCY = 2
#: a notch: the ratio dips below this share of its median around the dip
NOTCH_DEPTH = 0.35


@dataclass(frozen=True)
class Resolution:
    """What the spectrum says: the effective side of the synthetic images and the side compared at."""

    effective_side: int
    comparison_side: int
    image_side: int
    #: cycles per image up to which the synthetic set keeps RATIO_FLOOR of the reals' power
    cutoff: float
    #: synthetic / real power ratio at a few frequencies (cycles per image), for the record
    ratio_at: dict[int, float]
    n_synthetic: int
    n_real: int

    @property
    def full(self) -> bool:
        """True when the synthetic images resolve every frequency the reals have."""
        return self.effective_side >= self.image_side

    def describe(self) -> str:
        if self.full:
            return (f"synthetic images carry every scale of the reals (power-spectrum ratio >= {RATIO_FLOOR:g} up to "
                    f"{self.cutoff:g} cycles/image): compared at {self.comparison_side} px")
        return (f"synthetic images carry detail down to about {self.effective_side} px per side (their power spectrum "
                f"falls below {RATIO_FLOOR:g} of the reals' past {self.cutoff:g} cycles/image): compared at "
                f"{self.comparison_side} px, never finer")

    def to_json(self) -> dict:
        return {"effective_side": self.effective_side, "comparison_side": self.comparison_side,
                "image_side": self.image_side, "cutoff_cycles_per_image": self.cutoff,
                "power_ratio": {str(k): v for k, v in self.ratio_at.items()}, "ratio_floor": RATIO_FLOOR,
                "images": {"synthetic": self.n_synthetic, "real": self.n_real},
                "method": "radially averaged power spectrum, synthetic / real (Hann-windowed 2-D FFT)",
                "description": self.describe()}


def radial_power(pixels: np.ndarray) -> np.ndarray:
    """Mean power per integer radius (cycles per image, 0 .. side/2) of square images [n, side, side]."""
    n, side, _ = pixels.shape
    window = np.outer(np.hanning(side), np.hanning(side)).astype(np.float32)
    freq = np.fft.fftfreq(side) * side
    radius = np.rint(np.hypot(*np.meshgrid(freq, freq, indexing="ij"))).astype(int).reshape(-1)
    keep = radius <= side // 2
    total = np.zeros(side // 2 + 1)
    # the power of a real image is symmetric: the half-spectrum (rfft2) holds every radius, the columns
    # 1 .. side/2 - 1 standing for two bins each
    half = side // 2 + 1
    radius, keep = radius.reshape(side, side)[:, :half], keep.reshape(side, side)[:, :half]
    twice = np.ones((side, half))
    twice[:, 1:side - half + 1] = 2.0
    for start in range(0, n, 64):
        x = pixels[start:start + 64].astype(np.float32) / 255.0
        x = (x - x.mean(axis=(1, 2), keepdims=True)) * window
        power = ((np.abs(scipy_fft.rfft2(x, workers=-1)) ** 2).sum(0) * twice)[keep]
        total += np.bincount(radius[keep], weights=power, minlength=side // 2 + 1)
    counts = np.bincount(radius[keep], weights=twice[keep], minlength=side // 2 + 1)
    return total / np.maximum(counts, 1) / max(n, 1)


def comparison_side_for(effective_side: int) -> int:
    """The largest comparison side not finer than the effective side (and not above MAX_COMPARISON_SIDE)."""
    allowed = [s for s in COMPARISON_SIDES if s <= min(effective_side, MAX_COMPARISON_SIDE)]
    return allowed[-1] if allowed else COMPARISON_SIDES[0]


def estimate_resolution(synthetic: np.ndarray, real: np.ndarray) -> Resolution:
    """Effective resolution of `synthetic` against `real` (uint8 [n, side, side] each, same side)."""
    if synthetic.ndim != 3 or real.ndim != 3 or synthetic.shape[1:] != real.shape[1:]:
        raise ValueError(f"image stacks of one square size expected, got {synthetic.shape} and {real.shape}")
    side = synthetic.shape[1]
    ratio = radial_power(synthetic) / np.maximum(radial_power(real), 1e-30)
    # the cutoff: the first frequency where the ratio (median of three neighbouring bins, so that one
    # noisy bin neither ends nor extends it) falls below the floor
    padded = np.r_[ratio[:1], ratio, ratio[-1:]]
    smooth = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    below = np.flatnonzero((smooth < RATIO_FLOOR) & (np.arange(len(ratio)) >= LOWEST_FREQUENCY))
    cutoff = float(below[0]) if len(below) else side / 2
    effective = int(min(side, round(2 * cutoff)))
    box = _box_upsampled_side(ratio)
    if box is not None and box < effective:
        effective, cutoff = box, box / 2
    probes = sorted({f for f in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128) if f < len(ratio)})
    return Resolution(effective_side=effective, comparison_side=comparison_side_for(effective), image_side=side,
                      cutoff=cutoff, ratio_at={f: round(float(ratio[f]), 4) for f in probes},
                      n_synthetic=len(synthetic), n_real=len(real))


def _box_upsampled_side(ratio: np.ndarray) -> int | None:
    """s when the ratio has notches at every multiple of s cycles per image: the signature of
    nearest-neighbour upsampling from s px, whose blocks replicate the spectrum instead of removing
    it. A notch is a dip to under NOTCH_DEPTH of the ratio's median around it (the depth of the
    replicas' floor differs between CT slices and smooth phantoms, so it is measured locally)."""
    top = len(ratio) - 1
    for s in range(6, top // 2 + 1):
        notched = True
        for m in range(s, top + 1, s):
            around = np.r_[ratio[max(0, m - s // 3):max(0, m - 2)], ratio[m + 3:m + s // 3 + 1]]
            dip = ratio[max(0, m - 1):m + 2].min()
            if len(around) < 2 or dip >= NOTCH_DEPTH * np.median(around):
                notched = False
                break
        if notched:
            return s
    return None


def sample_rows(n: int, size: int = SAMPLE_IMAGES, seed: int = 0) -> np.ndarray:
    """Sorted seeded sample of at most `size` of n row indices."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
