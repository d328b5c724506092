"""Procedural CT-like chest phantoms with per-patient anatomy, for the demo and the tests.

Each "patient" has its own body outline, lung shape, vessel tree and nodules; its slices vary
smoothly around that anatomy, so slices of one patient resemble each other more than slices of two
patients (as in real CT series, which is why splits must be by patient).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 256


@dataclass
class Patient:
    body_axes: tuple[float, float]
    body_center: tuple[float, float]
    lung_axes: tuple[float, float]
    lung_gap: float
    lung_tilt: float
    tissue_level: float
    lung_level: float
    vessels: np.ndarray  # [m, 4]: x, y (relative to lung centre, in lung radii), radius, brightness
    nodules: np.ndarray  # [k, 4]: side (-1/1), x, y (relative), radius
    noise: float


def make_patient(rng: np.random.Generator) -> Patient:
    m = int(rng.integers(25, 45))
    vessels = np.c_[rng.uniform(-0.85, 0.85, (m, 2)), rng.uniform(1.0, 3.2, m), rng.uniform(0.55, 1.0, m)]
    k = int(rng.integers(0, 4))
    nodules = np.c_[rng.choice([-1, 1], k), rng.uniform(-0.6, 0.6, (k, 2)), rng.uniform(3, 9, k)]
    return Patient(
        body_axes=(rng.uniform(95, 120), rng.uniform(70, 92)),
        body_center=(128 + rng.uniform(-6, 6), 132 + rng.uniform(-6, 6)),
        lung_axes=(rng.uniform(30, 42), rng.uniform(42, 58)),
        lung_gap=rng.uniform(36, 50),
        lung_tilt=rng.uniform(-12, 12),
        tissue_level=rng.uniform(120, 160),
        lung_level=rng.uniform(15, 40),
        vessels=vessels,
        nodules=nodules,
        noise=rng.uniform(4, 9),
    )


def render_slice(p: Patient, z: float, rng: np.random.Generator) -> np.ndarray:
    """One 256x256 uint8 slice at relative position z in [0, 1] through the patient's chest."""
    img = np.zeros((SIZE, SIZE), np.float32)
    cx, cy = p.body_center
    bx, by = p.body_axes
    cv2.ellipse(img, (int(cx), int(cy)), (int(bx), int(by)), 0, 0, 360, p.tissue_level, -1)
    # fat ring and spine give the slices a recognisable, patient-specific frame
    cv2.ellipse(img, (int(cx), int(cy)), (int(bx) - 8, int(by) - 8), 0, 0, 360, p.tissue_level - 25, 6)
    cv2.circle(img, (int(cx), int(cy + by - 22)), 11, 235, -1)
    scale = 0.8 + 0.4 * np.sin(np.pi * (0.2 + 0.6 * z))  # lungs grow then shrink along the series
    lx, ly = p.lung_axes[0] * scale, p.lung_axes[1] * scale
    lung_mask = np.zeros_like(img)
    for side in (-1, 1):
        centre = (int(cx + side * (p.lung_gap + lx * 0.5)), int(cy - 8))
        cv2.ellipse(lung_mask, centre, (int(lx), int(ly)), side * p.lung_tilt, 0, 360, 1.0, -1)
    img = np.where(lung_mask > 0, p.lung_level, img)
    for vx, vy, r, b in p.vessels:
        side = 1 if vx >= 0 else -1
        x = cx + side * (p.lung_gap + lx * 0.5) + (abs(vx) - 0.4) * lx * 1.4 * side
        y = cy - 8 + (vy + 0.15 * np.sin(6 * z + 3 * vx)) * ly
        if lung_mask[int(np.clip(y, 0, SIZE - 1)), int(np.clip(x, 0, SIZE - 1))] > 0:
            cv2.circle(img, (int(x), int(y)), max(1, int(round(r))), float(p.tissue_level * b), -1)
    for side, nx, ny, r in p.nodules:
        if abs(z - 0.5) < 0.45:
            x = cx + side * (p.lung_gap + lx * 0.5) + nx * lx
            y = cy - 8 + ny * ly
            cv2.circle(img, (int(x), int(y)), int(r * (1 - abs(z - 0.5))), 200, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    img += rng.normal(0, p.noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_phantoms(n_patients: int, slices_per_patient: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n_patients * slices, 256, 256], patient index of each image)."""
    rng = np.random.default_rng(seed)
    images, groups = [], []
    for pid in range(n_patients):
        patient = make_patient(rng)
        for z in np.linspace(0.1, 0.9, slices_per_patient) + rng.uniform(-0.03, 0.03, slices_per_patient):
            images.append(render_slice(patient, float(z), rng))
            groups.append(pid)
    return np.stack(images), np.array(groups)


#: populations of very different anatomy and acquisition (body habitus, CT window, noise), for
#: shifted benchmarks: (body scale, lung scale, intensity gain, intensity offset, noise scale)
POPULATIONS: tuple[tuple[float, float, float, float, float], ...] = (
    (1.00, 1.00, 1.00, 0.0, 1.0),    # adults, lung window
    (0.72, 0.80, 1.00, 0.0, 0.8),    # small patients (children)
    (1.15, 1.10, 0.70, 45.0, 1.0),   # large patients, a wider (flatter) window
    (0.95, 0.90, 1.25, -20.0, 1.6),  # a noisier scanner with a narrower window
)


def make_population_phantoms(n_patients: int, slices_per_patient: int, n_populations: int = 4,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phantoms from several populations: (images, patient index, population index).

    Patients are assigned to populations in turn; each population rescales the anatomy and maps the
    intensities through its own window, so images of two populations differ far more than two
    patients of one population (the setting where a threshold learned on one population fails on
    another).
    """
    if not 1 <= n_populations <= len(POPULATIONS):
        raise ValueError(f"n_populations must be in 1..{len(POPULATIONS)}")
    rng = np.random.default_rng(seed)
    images, groups, populations = [], [], []
    for pid in range(n_patients):
        pop = pid % n_populations
        body, lung, gain, offset, noise = POPULATIONS[pop]
        p = make_patient(rng)
        p.body_axes = (p.body_axes[0] * body, p.body_axes[1] * body)
        p.lung_axes = (p.lung_axes[0] * lung * body, p.lung_axes[1] * lung * body)
        p.lung_gap *= body
        p.noise *= noise
        for z in np.linspace(0.1, 0.9, slices_per_patient) + rng.uniform(-0.03, 0.03, slices_per_patient):
            img = render_slice(p, float(z), rng).astype(np.float32)
            img = np.where(img > 0, img * gain + offset, img)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            groups.append(pid)
            populations.append(pop)
    return np.stack(images), np.array(groups), np.array(populations)
