"""A dropped upload: files copied, zips unpacked safely, a bad one refused in one line."""

from __future__ import annotations

import zipfile

import pytest

from mammo.core.errors import DataError
from mammo.webapp.uploads import receive_upload


def test_files_and_a_zips_members_land_in_the_upload_folder(tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"x" * 10)
    with zipfile.ZipFile(tmp_path / "exam.zip", "w") as archive:
        archive.writestr("exam/L_CC.dcm", b"y" * 10)
        archive.writestr("exam/.DS_Store", b"z")
        archive.writestr("__MACOSX/exam/._L_CC.dcm", b"z")
    files = receive_upload([tmp_path / "a.dcm", tmp_path / "exam.zip"], tmp_path / "up", 1000)
    assert [f.relative_to(tmp_path / "up").as_posix() for f in files] == ["000/a.dcm", "001/exam/L_CC.dcm"]


@pytest.mark.parametrize(
    ("make", "line"),
    [
        (lambda d: [], "no file was dropped"),
        (lambda d: [d / "empty.dcm"], "empty.dcm: empty"),
        (lambda d: [d / "big.dcm"], "over the app's limit of 0.0 MB"),
        (lambda d: [d / "slip.zip"], "member '../evil.dcm' would land outside the upload"),
        (lambda d: [d / "bomb.zip"], "bomb.zip unpacks to"),
    ],
)
def test_a_bad_upload_is_one_line_and_leaves_nothing(tmp_path, make, line):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "big.dcm").write_bytes(b"x" * 60)
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as archive:
        archive.writestr("../evil.dcm", b"y")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("huge.dcm", b"\0" * 5000)
    limit = 10 if "limit of 0.0" in line else 2000 if "unpacks" not in line else 1000
    with pytest.raises(DataError, match=line.replace("(", r"\(").replace(".", r"\.")):
        receive_upload(make(tmp_path), tmp_path / "up", limit)
    assert not (tmp_path / "up").exists() and not (tmp_path / "evil.dcm").exists()
