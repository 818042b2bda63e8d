"""Write small DICOM series with SimpleITK for the tests (one file per slice, geometry in the tags)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_affine(spacing=(0.8, 1.1, 2.5), origin=(12.5, -30.25, 44.0), angles=(0.3, 0.2), flip=(-1, -1, 1)):
    """A voxel -> RAS affine with anisotropic spacing, an oblique rotation, flipped axes and an offset."""
    a, b = angles
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag(flip) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def write_series(folder, arr_ijk, ras_affine, description="T1 MPRAGE", patient="subj01", uid_seed=1,
                 modality="MR", prefix="IM"):
    """Write `arr_ijk` (int16, nibabel (i, j, k) order) as a DICOM series whose geometry is `ras_affine`."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_FROM_RAS @ np.asarray(ras_affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    img = sitk.GetImageFromArray(np.transpose(np.asarray(arr_ijk, dtype=np.int16), (2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.reshape(-1).tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    uid = f"1.2.826.0.1.3680043.2.1125.{uid_seed}"
    orient = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        pos = "\\".join(f"{v:.10f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))
        for tag, value in (("0008|0060", modality), ("0020|000e", uid), ("0020|000d", uid + ".1"),
                           ("0008|103e", description), ("0010|0020", patient), ("0020|0037", orient),
                           ("0020|0032", pos), ("0020|0013", str(k + 1)), ("0018|0050", f"{spacing[2]:.6f}"),
                           ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"), ("0008|0018", f"{uid}.{k + 1}")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(s)
    return folder
