"""The demo dataset: deterministic, real DICOMs, learnable classes."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom

from mammo.data.demo import ensure_demo_dataset
from mammo.data.images import read_image
from mammo.data.labels import load_samples


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_and_varied(tmp_path):
    a = ensure_demo_dataset(tmp_path / "a", n_patients=8, seed=3, height=64, width=48)
    b = ensure_demo_dataset(tmp_path / "b", n_patients=8, seed=3, height=64, width=48)
    assert digest(a) == digest(b)
    assert ensure_demo_dataset(tmp_path / "a", n_patients=8, seed=3, height=64, width=48) == a
    samples = load_samples(a / "classificacao.csv", a / "archive")
    assert samples.table["PatientID"].nunique() == 8
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in samples.table["path"]]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(h.BitsStored) for h in headers} == {12, 14, 16}
    assert {(h.ImageLaterality, h.ViewPosition) for h in headers} == {
        ("L", "CC"),
        ("L", "MLO"),
        ("R", "CC"),
        ("R", "MLO"),
    }


def test_bright_tissue_fraction_grows_with_density(tmp_path):
    root = ensure_demo_dataset(tmp_path, n_patients=24, seed=0, height=96, width=80)
    table = load_samples(root / "classificacao.csv", root / "archive").table
    cc = table[table["image_id"].str.endswith("CC")]
    fraction = {}
    for label, group in cc.groupby("label"):
        images = [read_image(p) for p in group["path"]]
        fraction[label] = np.mean([(im > 0.6).sum() / max((im > 0.1).sum(), 1) for im in images])
    assert list(fraction) == sorted(fraction)
    assert all(fraction[a] < fraction[b] for a, b in zip(sorted(fraction), sorted(fraction)[1:]))
