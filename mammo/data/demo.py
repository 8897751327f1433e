"""Embedded demo dataset: synthetic mammogram phantoms written as real DICOM files.

Each phantom is a breast silhouette on a dark background (CC or MLO view with a pectoral muscle,
left or right) whose fibroglandular texture covers a fraction of the breast that grows with the
BI-RADS density class, so the classes are learnable. Files vary the way real exports do: 12/14/16
bits stored, some MONOCHROME1, some with a rescale intercept, some with a VOI window. They go
through exactly the same loading path as real data (``classificacao.csv`` + accession folders).

Generation is deterministic for given parameters and atomic (built in a temporary folder, then
renamed), so parallel first runs never see a half-written dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

MAMMO_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image, For Presentation
DENSE_FRACTION = {1: 0.08, 2: 0.30, 3: 0.55, 4: 0.80}
CLASS_PROBS = {1: 0.15, 2: 0.35, 3: 0.33, 4: 0.17}
VIEWS = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
VENDORS = [("Phantom Imaging", "PI-3000"), ("Demo Medical", "DM Senographe"), ("Phantom Imaging", "PI-5000")]
"""Each patient's scanner (Manufacturer, ManufacturerModelName): the subgroups a review reports."""
DEMO_VERSION = 2  # 2: a Manufacturer per patient


def phantom(
    density: int, laterality: str, view: str, shape: tuple[int, int], rng, noise: float = 0.015
) -> np.ndarray:
    """A float image in [0, 1] of one breast; the chest wall is on the left for ``L``.

    ``noise`` is the standard deviation of the Gaussian noise over the image (the demo's default
    is heavy; a detector's is nearer 0.001, which codecs compress as they do real mammograms).
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy = h * rng.uniform(0.45, 0.55)
    ay, ax = h * rng.uniform(0.36, 0.44), w * rng.uniform(0.62, 0.8)
    r = np.sqrt(((yy - cy) / ay) ** 2 + (xx / ax) ** 2)
    breast = r < 1.0
    thickness = np.sqrt(np.clip(1.0 - r, 0.0, 1.0))  # thinner, darker towards the skin line
    field = _smooth_noise(shape, sigma=max(h, w) / 28, rng=rng)
    target = float(np.clip(DENSE_FRACTION[density] + rng.uniform(-0.06, 0.06), 0.02, 0.95))
    threshold = np.quantile(field[breast], 1.0 - target)
    dense = 1.0 / (1.0 + np.exp(-(field - threshold) / 0.15))
    image = (0.25 + 0.55 * dense) * (0.6 + 0.4 * thickness) * breast
    if view == "MLO":  # pectoral muscle: a bright triangle in the upper chest-wall corner
        pect = xx / (w * rng.uniform(0.25, 0.35)) + yy / (h * rng.uniform(0.35, 0.5)) < 1.0
        image = np.where(pect, 0.85, image)
    image = image + rng.normal(0.0, noise, shape) + 0.03
    if laterality == "R":
        image = image[:, ::-1]
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng) -> np.ndarray:
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    return (field - field.mean()) / field.std()


def write_dicom(
    path: str | Path,
    stored: np.ndarray,
    *,
    patient_id: str,
    accession: str,
    laterality: str | None = None,
    view: str | None = None,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    uid_key: str = "",
    bits_allocated: int = 16,
    signed: bool = False,
    transfer_syntax: str | None = None,
    tags: dict | None = None,
) -> Path:
    """Write a greyscale mammography DICOM with the tags mammo reads.

    ``stored`` holds the stored values (8- or 16-bit allocated, signed or not); ``transfer_syntax``
    (a UID) compresses the pixel data with pydicom's encoders; ``tags`` sets further elements
    (keyword -> value), e.g. ``VOILUTFunction`` or ``PatientOrientation``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _mammogram_dataset(path, uid_key, patient_id, accession)
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:.1f}", f"{window[1]:.1f}"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    dtype = f"{'i' if signed else 'u'}{bits_allocated // 8}"
    ds.PixelData = np.ascontiguousarray(stored, dtype=dtype).tobytes()
    if transfer_syntax is not None:
        ds.compress(transfer_syntax, encoding_plugin="pylibjpeg" if transfer_syntax != RLELossless else "")
    ds.save_as(path, enforce_file_format=True)
    return path


def _mammogram_dataset(path: Path, uid_key: str, patient_id: str, accession: str) -> FileDataset:
    """A digital mammography dataset with its UIDs (stable for the same path or ``uid_key``) and
    the patient and exam tags; no pixels yet."""
    meta = FileMetaDataset()
    sop_uid = generate_uid(entropy_srcs=[uid_key or str(path), "sop"])
    meta.MediaStorageSOPClassUID = MAMMO_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MAMMO_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[accession, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_key or str(path), "series"])
    ds.Modality = "MG"
    ds.PatientID = patient_id
    ds.AccessionNumber = accession
    ds.StudyDate = "20240101"
    return ds


def _encode(image: np.ndarray, index: int, rng) -> dict:
    """Turn a [0, 1] image into stored values the way different scanners would."""
    bits = (12, 14, 16)[index % 3]
    top = 2**bits - 1
    values = image * top * 0.95
    kwargs: dict = {"bits_stored": bits}
    if index % 4 == 1:  # MONOCHROME1: stored values are inverted
        values = top - values
        kwargs["photometric"] = "MONOCHROME1"
    if index % 5 == 2:  # stored = (value - intercept); the modality LUT adds it back
        values = values - 100.0
        kwargs["rescale"] = (1.0, 100.0)
    if index % 3 == 0:
        kwargs["window"] = (top * 0.5, top * 1.0)
    kwargs["stored"] = np.clip(np.rint(values), 0, top).astype(np.uint16)
    return kwargs


def generate(root: Path, n_patients: int, seed: int, height: int, width: int) -> None:
    """Write ``root/classificacao.csv`` and ``root/archive/<AccessionNumber>/*.dcm``."""
    rng = np.random.default_rng(seed)
    classes, probs = list(CLASS_PROBS), list(CLASS_PROBS.values())
    rows, index = [], 0
    for p in range(n_patients):
        patient = f"P{p + 1:04d}"
        density = int(rng.choice(classes, p=probs))
        for _ in range(1 if rng.random() < 0.7 else 2):
            accession = f"ACC{len(rows) + 1:05d}"
            rows.append({"AccessionNumber": accession, "Classification": density})
            for laterality, view in VIEWS:
                image = phantom(density, laterality, view, (height, width), rng)
                write_dicom(
                    root / "archive" / accession / f"{laterality}_{view}.dcm",
                    patient_id=patient,
                    accession=accession,
                    laterality=laterality,
                    view=view,
                    uid_key=f"{seed}/{accession}/{laterality}_{view}",
                    tags=dict(zip(("Manufacturer", "ManufacturerModelName"), VENDORS[p % len(VENDORS)])),
                    **_encode(image, index, rng),
                )
                index += 1
    pd.DataFrame(rows).to_csv(root / "classificacao.csv", index=False)


def ensure_demo_dataset(
    base_dir: str | Path, n_patients: int = 60, seed: int = 0, height: int = 320, width: int = 256
) -> Path:
    """The demo dataset folder for these parameters, generated on first use."""
    root = Path(base_dir) / f"v{DEMO_VERSION}-p{n_patients}-s{seed}-{height}x{width}"
    if (root / "classificacao.csv").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        generate(tmp, n_patients, seed, height, width)
        os.rename(tmp, root)
    except OSError:
        if not (root / "classificacao.csv").is_file():  # lost a race only if the winner finished
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


if __name__ == "__main__":  # python -m mammo.data.demo [out_dir]: write the demo set somewhere
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mammo.data.demo", description="Write the demo DICOM set."
    )
    parser.add_argument("out_dir", nargs="?", default="outputs/demo_data")
    print(ensure_demo_dataset(parser.parse_args().out_dir))
