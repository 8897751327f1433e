"""A minimal JPEG Lossless encoder (process 14, selection value 1: transfer syntax
1.2.840.10008.1.2.4.70, as in the RSNA screening set), for test files only: none of the
installed libraries encodes it. ITU T.81 Annex H; one component, one Huffman table."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
# 17 difference categories (SSSS 0..16), each a 5-bit code: 00000..10000 (never all ones)
CODE_LENGTH = 5


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def encode(image: np.ndarray, precision: int) -> bytes:
    """One greyscale frame (unsigned, < 2**precision) as a lossless JPEG bitstream."""
    x = image.astype(np.int64)
    rows, cols = x.shape
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]  # first line: the left neighbour
    pred[1:, 0] = x[:-1, 0]  # first column: the one above
    pred[1:, 1:] = x[1:, :-1]  # predictor 1: left
    diff = (x - pred).ravel()
    diff = ((diff + 32768) % 65536) - 32768  # modulo 2**16, as T.81 H.1.2.1
    bits: list[str] = []
    for d in diff.tolist():
        size = 0 if d == 0 else (16 if d == -32768 else abs(d).bit_length())
        bits.append(format(size, f"0{CODE_LENGTH}b"))
        if 0 < size < 16:
            bits.append(format(d if d > 0 else d + (1 << size) - 1, f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing
    counts = bytes(17 if n == CODE_LENGTH else 0 for n in range(1, 17))
    return b"".join(
        [
            b"\xff\xd8",
            _segment(0xFFC3, struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0])),
            _segment(0xFFC4, bytes([0x00]) + counts + bytes(range(17))),
            _segment(0xFFDA, bytes([1, 1, 0x00, 1, 0, 0])),  # Ns, Cs/Td, Ss=1 (predictor), Se, Ah/Al
            bytes(data),
            b"\xff\xd9",
        ]
    )


def compress_file(path: Path) -> Path:
    """Re-write an uncompressed single-frame DICOM with JPEG Lossless SV1 pixel data."""
    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(path)
    frame = encode(ds.pixel_array, int(ds.BitsStored))
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEG_LOSSLESS_SV1
    ds.save_as(path, enforce_file_format=True)
    return path
