"""From a label CSV and DICOM files to batches: reading, labels, splits, demo data, datamodule."""
