"""A procedural head phantom: tissue labels, MR contrasts, CT in HU and FDG-like PET in Bq/mL.

Why procedural: every pipeline must run on a fresh machine with no download, and its tests must measure
something (contrast, bone, lesions, dose noise). The anatomy is built from nested ellipsoids in
coordinates that are smoothly and randomly deformed per subject; it is a caricature of a head, not
anatomy (see docs/phantoms.md for the tables and the limits).

Spatial order is the NIfTI voxel order (i, j, k) = (left->right, posterior->anterior, inferior->superior),
so the returned ``affine`` is RAS with the spacing on its diagonal and the origin centring the volume.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from medgen.errors import MedgenError

# Label values of the ``tissue`` map.
BACKGROUND, SCALP, SKULL, CSF, GM, WM, NUCLEI, LESION = range(8)
TISSUE_NAMES = {
    BACKGROUND: "background/air",
    SCALP: "scalp/soft tissue",
    SKULL: "skull (bone)",
    CSF: "CSF (incl. ventricles)",
    GM: "grey matter",
    WM: "white matter",
    NUCLEI: "deep grey nuclei",
    LESION: "white-matter lesion",
}
BRAIN_LABELS = (CSF, GM, WM, NUCLEI, LESION)

# Mean MR signal per tissue (arbitrary scanner units), indexed by label 0..7:
#            bg   scalp skull  CSF   GM    WM  nuclei lesion
MR_MEANS = {
    "A": {  # 3T-like: MPRAGE T1, fast spin-echo T2 / PD, FLAIR
        "t1": (0.0, 700.0, 180.0, 200.0, 550.0, 800.0, 620.0, 420.0),
        "t2": (0.0, 450.0, 100.0, 1000.0, 650.0, 450.0, 560.0, 880.0),
        "pd": (0.0, 650.0, 120.0, 850.0, 800.0, 650.0, 730.0, 830.0),
        "flair": (0.0, 500.0, 80.0, 120.0, 620.0, 450.0, 530.0, 950.0),
    },
    "B": {  # 1.5T-like spin-echo protocol: flatter T1 / FLAIR contrast, incomplete CSF suppression
        "t1": (0.0, 620.0, 200.0, 380.0, 580.0, 680.0, 610.0, 520.0),
        "t2": (0.0, 520.0, 120.0, 880.0, 610.0, 480.0, 540.0, 760.0),
        "pd": (0.0, 600.0, 140.0, 760.0, 720.0, 640.0, 690.0, 760.0),
        "flair": (0.0, 420.0, 90.0, 300.0, 560.0, 500.0, 520.0, 760.0),
    },
}
# Scanner properties per domain: Rician noise sigma as a fraction of the mean brain signal, bias-field
# amplitude (std of the log field) and the partial-volume blur sigma in voxels (i, j, k).
DOMAINS = {
    "A": {"noise": 0.02, "bias": 0.08, "blur": (0.5, 0.5, 0.5)},
    "B": {"noise": 0.045, "bias": 0.2, "blur": (0.7, 0.7, 1.6)},  # thick slices along k
}
# CT Hounsfield units per label; skull gets a table/diploe profile between SKULL_HU.
CT_HU = (-1000.0, 40.0, 1100.0, 10.0, 40.0, 30.0, 38.0, 22.0)
SKULL_HU = (700.0, 1500.0)  # diploe, cortical tables
CT_NOISE_HU = 6.0
# FDG-like activity in Bq/mL per label (about 60 min after ~200 MBq); lesions are hypo- or hyper-metabolic.
PET_BQML = (0.0, 1500.0, 600.0, 500.0, 11000.0, 3300.0, 12500.0, 1500.0)
PET_LESION_HYPER_BQML = 14000.0
PET_FWHM_MM = 7.0  # at real head size; never below 1.5 voxels

# Real-size geometry (mm) at scale 1. Cranium ellipsoid semi-axes (LR, AP, SI) and its centre height.
_CRANIUM = np.array([74.0, 94.0, 86.0])
_CRANIUM_Z = 10.0
_SCALP_MM, _SKULL_MM, _CSF_MM = 6.0, 6.5, 3.0

_STREAM_ANATOMY, _STREAM_MR, _STREAM_CT, _STREAM_PET = 1, 2, 3, 4


def head_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS affine with ``spacing`` on the diagonal and the world origin at the centre of the volume."""
    affine = np.eye(4)
    for ax in range(3):
        affine[ax, ax] = spacing[ax]
        affine[ax, 3] = -(shape[ax] - 1) / 2.0 * spacing[ax]
    return affine


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


def _interp_matrix(x: np.ndarray, n_ctrl: int, lo: float, hi: float) -> np.ndarray:
    """Gaussian-kernel weights from ``n_ctrl`` control points on [lo, hi] to the positions ``x``."""
    ctrl = np.linspace(lo, hi, n_ctrl)
    step = (hi - lo) / max(n_ctrl - 1, 1)
    w = np.exp(-0.5 * ((x[:, None] - ctrl[None, :]) / (0.7 * step)) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(
    rng: np.random.Generator,
    axes_pos: Sequence[np.ndarray],
    wavelength: float,
    extent: float,
    n_fields: int = 1,
) -> np.ndarray:
    """Smooth random fields (unit std) on a separable grid, shape (n_fields, *lengths of axes_pos).

    Control points sit every ``wavelength`` units on [-extent, extent] and are interpolated with
    separable Gaussian weights: cheap (three small matrix products) and resolution independent, so the
    same seed gives the same field at any sampling of the same positions.
    """
    n_ctrl = max(int(np.ceil(2 * extent / wavelength)) + 1, 3)
    mats = [_interp_matrix(np.asarray(p, dtype=np.float64), n_ctrl, -extent, extent) for p in axes_pos]
    coarse = rng.standard_normal((n_fields, n_ctrl, n_ctrl, n_ctrl)).astype(np.float32)
    f = np.einsum("ia,fabc->fibc", mats[0], coarse, optimize=True)
    f = np.einsum("jb,fibc->fijc", mats[1], f, optimize=True)
    f = np.einsum("kc,fijc->fijk", mats[2], f, optimize=True)
    std = f.reshape(n_fields, -1).std(axis=1).reshape(-1, 1, 1, 1)
    return f / np.maximum(std, 1e-6)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _radius(q: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoid radius |(q - centre) / semi| (1 on the surface)."""
    return np.sqrt(sum(((q[a] - centre[a]) / semi[a]) ** 2 for a in range(3)))


def _check_args(seed: int, shape: Sequence[int], spacing: Sequence[float], domain: str) -> None:
    if int(seed) != seed or seed < 0:
        raise MedgenError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if len(shape) != 3 or min(shape) < 8:
        raise MedgenError(f"head phantom shape must be 3 sizes of at least 8 voxels, got {tuple(shape)}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise MedgenError(f"head phantom spacing must be 3 positive sizes in mm, got {tuple(spacing)}")
    if domain not in DOMAINS:
        raise MedgenError(f"head phantom domain must be one of {sorted(DOMAINS)}, got {domain!r}")


def make_anatomy(
    seed: int, shape: Sequence[int] = (64, 64, 64), spacing: Sequence[float] = (3.0, 3.0, 3.0),
    lesions: int | None = None,
) -> dict:
    """The label map and the geometry fields the contrasts need (depends on ``seed`` only).

    Returns ``tissue`` (uint8), ``skull_depth`` (0 inner .. 1 outer surface of the skull, for the CT
    tables), ``texture`` (smooth unit-std field for tissue heterogeneity), ``lesion_ids`` (int16, 0 or the
    1-based lesion number), ``lesion_hyper`` (bool per lesion: hyper-metabolic on PET) and ``scale``.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    rng = _rng(seed, _STREAM_ANATOMY)
    max_sp = max(spacing)

    # Fit a real-size head into the field of view; shrink it (never grow) when the FOV is small.
    half_fov = np.array([shape[a] * spacing[a] / 2.0 for a in range(3)])
    fit = float(np.min(0.9 * half_fov / (_CRANIUM + np.array([0.0, 0.0, _CRANIUM_Z]))))
    subject_scale = rng.normal(1.0, 0.04, 3).clip(0.9, 1.1)
    semi_head = _CRANIUM * subject_scale * min(1.0, fit / float(subject_scale.max()))
    s_mean = float(np.mean(semi_head / _CRANIUM))

    def thick(mm: float, min_vox: float = 1.2) -> float:
        return max(mm * s_mean, min_vox * max_sp)

    # World coordinates of voxel centres (mm), separable per axis.
    pos = [(np.arange(shape[a]) - (shape[a] - 1) / 2.0) * spacing[a] for a in range(3)]
    unit = 100.0 * s_mean  # noise is defined in head-relative units so anatomy is resolution independent
    pos_u = [p / unit for p in pos]

    # Smooth deformation (low-frequency displacement, ~3 mm) then a small rotation / shift.
    disp = smooth_noise(rng, pos_u, wavelength=0.45, extent=1.4, n_fields=3) * (3.0 * s_mean)
    grid = np.meshgrid(*[p.astype(np.float32) for p in pos], indexing="ij")
    angles = np.deg2rad(rng.normal(0.0, [3.0, 3.0, 4.0]))
    rot = _rotation(angles).T.astype(np.float32)  # inverse rotation: world -> head frame
    shift = rng.normal(0.0, 2.0, 3) * s_mean
    p = [grid[a] - shift[a] + disp[a] for a in range(3)]
    q = [rot[a, 0] * p[0] + rot[a, 1] * p[1] + rot[a, 2] * p[2] for a in range(3)]
    del grid, p, disp

    fold = smooth_noise(rng, pos_u, wavelength=0.065, extent=1.4, n_fields=2)
    texture, skull_var = fold[1], smooth_noise(rng, pos_u, wavelength=0.5, extent=1.4)[0]
    fold = fold[0]

    cz = _CRANIUM_Z * s_mean
    centre = (0.0, 0.0, cz)
    r_head = _radius(q, centre, semi_head)
    # Face / neck: a lower soft-tissue ellipsoid, cut by the FOV.
    r_neck = _radius(q, (0.0, 8.0 * s_mean, -62.0 * s_mean), semi_head * np.array([0.8, 0.78, 0.85]))
    t_scalp = thick(_SCALP_MM * rng.uniform(0.85, 1.15))
    t_skull = thick(_SKULL_MM * rng.uniform(0.85, 1.15), 1.5)
    t_csf = thick(_CSF_MM * rng.uniform(0.8, 1.3), 0.8)
    semi_skull = semi_head - t_scalp
    r_skull_out = _radius(q, centre, semi_skull)
    skull_t = np.maximum(t_skull * (1.0 + 0.2 * skull_var), 1.6 * max_sp)  # no digital holes
    semi_in = [semi_skull[a] - skull_t for a in range(3)]
    r_skull_in = np.sqrt(sum(((q[a] - centre[a]) / semi_in[a]) ** 2 for a in range(3)))
    semi_brain = semi_skull - t_skull - t_csf
    r_brain = _radius(q, centre, semi_brain)
    depth = (1.0 - r_brain) * float(np.mean(semi_brain))  # approx. mm below the pial surface

    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[(r_head <= 1.0) | (r_neck <= 1.0)] = SCALP
    skull = (r_skull_out <= 1.0) & (r_skull_in > 1.0)
    tissue[skull] = SKULL
    inside = r_skull_in <= 1.0
    tissue[inside] = CSF

    # Cortex: sulci are the zero set of a smooth field (|fold| small), lined by grey matter; white matter
    # lies deeper under sulci than under gyral crowns. The interhemispheric fissure joins the sulci.
    t_gm = thick(5.0, 0.6)
    sulc_depth = 22.0 * s_mean
    sulcal = np.abs(fold)
    fissure = np.abs(q[0]) / (6.0 * s_mean)
    sulcal = np.where(r_brain > 0.35, np.minimum(sulcal, fissure), sulcal)
    near_sulcus = np.clip(1.0 - sulcal / 1.3, 0.0, 1.0) ** 1.5
    wm_depth = t_gm + sulc_depth * near_sulcus + 0.8 * s_mean * texture
    csf_sulcus = (sulcal < 0.12 + 0.5 * max_sp / (100.0 * s_mean)) & (depth < sulc_depth)
    brain = inside & (r_brain <= 1.0) & ~csf_sulcus
    tissue[brain] = GM
    tissue[brain & (depth > wm_depth)] = WM

    s = s_mean
    # Cerebellum (GM cortex with WM core) and brainstem (WM), posterior-inferior.
    r_cb = _radius(q, (0.0, -50.0 * s, -36.0 * s), (46.0 * s, 24.0 * s, 18.0 * s))
    cereb = inside & (r_cb <= 1.0)
    tissue[cereb] = GM
    tissue[cereb & (r_cb < 0.5 + 0.1 * np.abs(fold))] = WM
    stem = inside & (_radius(q, (0.0, -16.0 * s, -32.0 * s), (10.0 * s, 11.0 * s, 30.0 * s)) <= 1.0)
    tissue[stem] = WM

    # Deep nuclei: thalami, caudate heads, putamina.
    for side in (-1.0, 1.0):
        for c, semi in (
            ((9.0, -10.0, 4.0), (7.0, 11.0, 8.0)),
            ((12.0, 13.0, 12.0), (5.0, 9.0, 7.0)),
            ((23.0, 4.0, 4.0), (5.0, 12.0, 9.0)),
        ):
            cc = (side * c[0] * s, c[1] * s, c[2] * s + cz)
            tissue[inside & (_radius(q, cc, [max(v * s, 0.8 * max_sp) for v in semi]) <= 1.0)] = NUCLEI

    # Ventricles: two curved lateral ventricles and a thin third ventricle; size varies (atrophy).
    vsize = float(rng.lognormal(0.0, 0.2))
    for side in (-1.0, 1.0):
        qz_bent = [q[0], q[1], q[2] + 0.006 * (q[1] ** 2) / s]  # banana shape: horns bend down
        semi = [max(v * s * vsize, 0.7 * max_sp) for v in (7.0, 26.0, 8.0)]
        tissue[inside & (_radius(qz_bent, (side * 7.5 * s, 0.0, 16.0 * s + cz), semi) <= 1.0)] = CSF
    semi3 = [max(1.5 * s * vsize, 0.6 * max_sp), 9.0 * s, 7.0 * s]
    tissue[inside & (_radius(q, (0.0, -4.0 * s, 2.0 * s + cz), semi3) <= 1.0)] = CSF

    # White-matter lesions: small perturbed ellipsoids, kept where the tissue is white matter.
    n_les = int(rng.integers(1, 5)) if lesions is None else int(lesions)
    if n_les < 0:
        raise MedgenError(f"lesions must be >= 0 or None, got {lesions!r}")
    lesion_ids = np.zeros(shape, dtype=np.int16)
    lesion_hyper = rng.random(n_les) < 0.5
    wm_idx = np.argwhere((tissue == WM) & (depth > 2.0 * t_gm) & (r_cb > 1.0) & (stem == 0))
    if len(wm_idx) == 0:
        wm_idx = np.argwhere(tissue == WM)
    for n in range(n_les):
        if len(wm_idx) == 0:
            break
        c_vox = wm_idx[rng.integers(len(wm_idx))]
        radii = np.maximum(rng.uniform(3.0, 8.0) * s * rng.uniform(0.7, 1.3, 3), 1.2 * max_sp)
        lo = [max(int(c_vox[a] - radii[a] / spacing[a]) - 2, 0) for a in range(3)]
        hi = [min(int(c_vox[a] + radii[a] / spacing[a]) + 3, shape[a]) for a in range(3)]
        sl = tuple(slice(lo[a], hi[a]) for a in range(3))
        d = np.sqrt(sum(((pos[a][sl[a]] - pos[a][c_vox[a]]) / radii[a]).reshape(
            [-1 if b == a else 1 for b in range(3)]) ** 2 for a in range(3)))
        blob = (d <= 1.0 + 0.25 * texture[sl]) & (tissue[sl] == WM)
        blob[tuple(c_vox[a] - lo[a] for a in range(3))] = True
        tissue[sl][blob] = LESION
        lesion_ids[sl][blob] = n + 1

    skull_depth = np.clip((r_skull_in - 1.0) / np.maximum(r_skull_in - r_skull_out, 1e-6), 0.0, 1.0)
    return {
        "tissue": tissue,
        "skull_depth": skull_depth.astype(np.float32),
        "texture": texture.astype(np.float32),
        "lesion_ids": lesion_ids,
        "lesion_hyper": lesion_hyper[: lesion_ids.max()],
        "scale": s_mean,
        "spacing": spacing,
        "pos_u": pos_u,
    }


def _mr_image(anat: dict, means: Sequence[float], dom: dict, rng: np.random.Generator) -> np.ndarray:
    """Tissue means with subject variation and texture, partial-volume blur, bias field, Rician noise."""
    tissue = anat["tissue"]
    m = np.asarray(means, dtype=np.float32) * rng.normal(1.0, 0.04, len(means)).astype(np.float32)
    m *= np.float32(rng.lognormal(0.0, 0.08))
    img = m[tissue] * (1.0 + 0.03 * anat["texture"]) * (tissue > 0)
    img = ndimage.gaussian_filter(img, dom["blur"], mode="nearest")
    bias = smooth_noise(rng, anat["pos_u"], wavelength=0.9, extent=1.4)[0]
    img *= np.exp(dom["bias"] * bias)
    sigma = dom["noise"] * float(np.mean(m[[GM, WM]]))
    real = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def _ct_image(anat: dict, rng: np.random.Generator) -> np.ndarray:
    tissue = anat["tissue"]
    hu = np.asarray(CT_HU, dtype=np.float32) + rng.normal(0.0, 3.0, len(CT_HU)).astype(np.float32)
    hu[BACKGROUND] = -1000.0
    img = hu[tissue]
    # Skull: dense inner/outer tables, spongy diploe in between, with bone texture.
    sd = anat["skull_depth"]
    table = np.abs(2.0 * sd - 1.0) ** 1.5
    bone = SKULL_HU[0] + (SKULL_HU[1] - SKULL_HU[0]) * table + 120.0 * anat["texture"]
    bone_voxels = tissue == SKULL
    img[bone_voxels] = np.clip(bone[bone_voxels], 450.0, 1900.0)
    img = ndimage.gaussian_filter(img, 0.5, mode="nearest")
    img += rng.normal(0.0, CT_NOISE_HU, img.shape).astype(np.float32)
    return np.clip(img, -1024.0, 3071.0).astype(np.float32)


def _pet_image(anat: dict, rng: np.random.Generator) -> np.ndarray:
    tissue = anat["tissue"]
    act = np.asarray(PET_BQML, dtype=np.float32) * rng.normal(1.0, 0.05, len(PET_BQML)).astype(np.float32)
    act *= np.float32(rng.lognormal(0.0, 0.15))  # injected dose / body weight / uptake time
    img = act[tissue]
    # Smooth regional metabolism of grey matter (+-10 %) and per-lesion hypo/hyper-metabolism.
    regional = smooth_noise(rng, anat["pos_u"], wavelength=0.35, extent=1.4)[0]
    gm = (tissue == GM) | (tissue == NUCLEI)
    img[gm] *= 1.0 + 0.1 * regional[gm]
    for n, hyper in enumerate(anat["lesion_hyper"]):
        if hyper:
            img[anat["lesion_ids"] == n + 1] = PET_LESION_HYPER_BQML * act[WM] / PET_BQML[WM]
    fwhm = [max(PET_FWHM_MM * anat["scale"] / sp, 1.5) for sp in anat["spacing"]]
    img = ndimage.gaussian_filter(img, [f / (2.0 * np.sqrt(2.0 * np.log(2.0))) for f in fwhm], mode="constant")
    return np.maximum(img, 0.0).astype(np.float32)


def make_head(
    seed: int,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (3.0, 3.0, 3.0),
    lesions: int | None = None,
    domain: str = "A",
    mr_noise: bool = True,
) -> dict:
    """One phantom subject: labels, masks, MR (t1, t2, pd, flair), CT (HU) and PET (Bq/mL).

    Args:
        seed: subject id; the anatomy, CT and PET depend on it only, the MR on (seed, domain).
        shape, spacing: voxel grid (i, j, k) and voxel size in mm. A real-size head (about 150 x 190 mm)
            is shrunk, never grown, to fit a small field of view.
        lesions: number of white-matter lesions; None draws 1-4, 0 gives a healthy subject.
        domain: "A" or "B", two simulated MR scanners differing in contrast, noise, bias field and
            through-plane resolution; the anatomy is the same for a given seed.
        mr_noise: False leaves the Rician noise out of the MR images, everything else (tissue means, texture,
            blur, bias field) identical: a noise-free reference for scoring synthesised images.

    Returns a dict of arrays of ``shape``: ``tissue``, ``head_mask``, ``brain_mask``, ``lesion`` (uint8),
    ``t1``, ``t2``, ``pd``, ``flair``, ``ct``, ``pet`` (float32; ``pet`` is the noise-free activity blurred to
    PET resolution, see medgen.data.dose for counting noise), and ``affine`` (4x4 RAS).
    """
    _check_args(seed, shape, spacing, domain)
    anat = make_anatomy(seed, shape, spacing, lesions)
    tissue = anat["tissue"]
    out = {
        "tissue": tissue,
        "head_mask": (tissue > 0).astype(np.uint8),
        "brain_mask": np.isin(tissue, BRAIN_LABELS).astype(np.uint8),
        "lesion": (tissue == LESION).astype(np.uint8),
    }
    dom = DOMAINS[domain]
    for i, contrast in enumerate(("t1", "t2", "pd", "flair")):
        rng = _rng(seed, _STREAM_MR, 0 if domain == "A" else 1, i)
        out[contrast] = _mr_image(anat, MR_MEANS[domain][contrast], dom if mr_noise else dict(dom, noise=0.0), rng)
    out["ct"] = _ct_image(anat, _rng(seed, _STREAM_CT))
    out["pet"] = _pet_image(anat, _rng(seed, _STREAM_PET))
    out["affine"] = head_affine(tuple(int(s) for s in shape), tuple(float(s) for s in spacing))
    return out
