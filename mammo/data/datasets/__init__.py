"""Public density datasets read as published: RSNA, VinDr-Mammo, CBIS-DDSM, EMBED, INbreast.

Each reader turns a dataset's own label file(s) (``../shared/spec/public-datasets.md``) into one
table of images with paths relative to ``data.dicom_root``: columns ``image_path``,
``density`` (1-4), ``PatientID``, ``AccessionNumber``, ``laterality`` (L/R), ``view``, ``split``
(the dataset's official split, or empty), ``csv_row``; plus the rows it left out with a reason
(``excluded``: no usable density, male, not a 2D full-field image, ...). ``load_public``
then checks and hashes the files exactly as for a user's own CSV.

>>> from mammo.data.datasets.registry import READERS
>>> sorted(READERS)
['cbis_ddsm', 'embed', 'inbreast', 'rsna', 'vindr']

One module per dataset, each registering its reader by name (``registry.register``); importing
this package registers them all. A new dataset is a new module here plus its import below.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammo.core.errors import DataError
from mammo.data.datasets import cbis_ddsm, emory_embed, inbreast, rsna, vindr  # noqa: F401 (they register)
from mammo.data.datasets.registry import READERS, read_public
from mammo.data.labels import Samples, exclude_views, image_path_rows
from mammo.data.scan import PatientSource, patient_ids_record, scan_files
from mammo.data.settings import BadInput, refused

__all__ = ["READERS", "load_public", "read_public"]


def load_public(
    dataset, files, dicom_root, options, on_bad_file, hash_index, workers, views, patient_id="auto"
) -> Samples:
    """A public dataset's label files, read as published (:func:`read_public`), then its files
    checked and hashed exactly as for a user's own CSV (:func:`mammo.data.labels.load_samples`);
    ``patient_id``: ``data.patient_id`` (``auto``: the reader's patient column)."""
    patients = PatientSource.parse(patient_id, "PatientID")
    if not dicom_root or not Path(dicom_root).is_dir():
        raise DataError(f"data.dicom_root: folder not found: {dicom_root}")
    root = Path(dicom_root)
    bad = BadInput(on_bad_file)
    public = read_public(dataset, files, root, bad, **options)
    first = public.label_files[0]
    rows = image_path_rows(public.frame, first, root, "image_path", "AccessionNumber", bad)
    table = scan_files(
        pd.DataFrame(rows),
        public.frame,
        root,
        patients,
        "laterality",
        "view",
        bad,
        hash_index,
        workers,
        extra=("split",),
    )
    table = exclude_views(table, views, public.excluded)
    if table.empty:
        raise DataError(
            f"data={dataset}: no usable images in {', '.join(map(str, public.label_files))} under {root}"
            f" ({refused(bad.records, public.excluded)})"
        )
    table["label"] = table["label"] - 1
    patient_ids, split_exams = patient_ids_record(table, patients)
    return Samples(
        table=table.drop(columns="patient_from"),
        class_labels=[1, 2, 3, 4],
        source={
            "dataset": dataset,
            "csv": str(first),
            "label_files": [str(f) for f in public.label_files],
            "dicom_root": str(root),
            "layout": dataset,
        },
        excluded=public.excluded,
        skipped=bad.records,
        patient_ids=patient_ids,
        exams_with_several_patients=split_exams,
    )
