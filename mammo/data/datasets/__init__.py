"""Public density datasets read as published: RSNA, VinDr-Mammo, CBIS-DDSM, EMBED, INbreast.

Each reader turns a dataset's own label file(s) (``../shared/spec/public-datasets.md``) into one
table of images with paths relative to ``data.dicom_root``: columns ``image_path``,
``density`` (1-4), ``PatientID``, ``AccessionNumber``, ``laterality`` (L/R), ``view``, ``split``
(the dataset's official split, or empty), ``csv_row``; plus the rows it left out with a reason
(``excluded``: no usable density, male, not a 2D full-field image, ...). ``mammo.data.labels``
then checks and hashes the files exactly as for a user's own CSV.

>>> from mammo.data.datasets.registry import READERS
>>> sorted(READERS)
['cbis_ddsm', 'embed', 'inbreast', 'rsna', 'vindr']

One module per dataset, each registering its reader by name (``registry.register``); importing
this package registers them all. A new dataset is a new module here plus its import below.
"""

from mammo.data.datasets import cbis_ddsm, emory_embed, inbreast, rsna, vindr  # noqa: F401 (they register)
from mammo.data.datasets.registry import READERS, read_public

__all__ = ["READERS", "read_public"]
