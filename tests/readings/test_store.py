"""readings/<reader>.csv: appended, flushed, one file per reader, a cut line left out."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from mammo.core.errors import DataError
from mammo.readings.store import append_reading, read_readings, reader_file


def test_each_reading_is_on_disk_when_append_returns_and_a_cut_line_is_no_reading(tmp_path):
    append_reading(tmp_path, "ann", {"image_id": "A/L_CC", "reading": "3", "note": "dense, with a comma"})
    append_reading(tmp_path, "ann", {"image_id": "A/R_CC", "reading": "cannot_tell"})
    path = reader_file(tmp_path, "ann")
    text = path.read_text()
    assert text.count("\n") == 3 and text.startswith("time,reader,image_id")
    with open(path, "a") as cut:  # a kill in the middle of a write
        cut.write("2026-12-07T00:00:00+00:00,ann,A/L_MLO,Acc")
    readings = read_readings(tmp_path)
    assert list(readings["image_id"]) == ["A/L_CC", "A/R_CC"]
    assert readings["note"][0] == "dense, with a comma" and list(readings["reading"]) == ["3", "cannot_tell"]


def test_a_later_reading_of_the_same_image_replaces_the_earlier(tmp_path):
    append_reading(tmp_path, "ann", {"image_id": "x", "reading": "2"})
    append_reading(tmp_path, "ann", {"image_id": "x", "reading": "4"})
    assert list(read_readings(tmp_path)["reading"]) == ["4"]


@pytest.mark.parametrize("name", ["../evil", "", "a/b", ".hidden", "x" * 65])
def test_a_reader_name_that_is_not_one_plain_file_name_is_refused(tmp_path, name):
    with pytest.raises(DataError, match="reader"):
        append_reading(tmp_path, name, {"image_id": "x", "reading": "2"})
    assert not (tmp_path / "readings").exists() or not any((tmp_path / "readings").iterdir())


def _reader(folder, name, count):
    for k in range(count):
        append_reading(folder, name, {"image_id": f"img{k}", "reading": str(1 + k % 4)})


def test_two_readers_at_once_each_get_their_own_whole_file(tmp_path):
    workers = [multiprocessing.Process(target=_reader, args=(tmp_path, n, 200)) for n in ("ann", "bob")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    readings = read_readings(tmp_path)
    for name in ("ann", "bob"):
        own = readings[readings["reader"] == name]
        assert list(own["image_id"]) == [f"img{k}" for k in range(200)]
        assert reader_file(tmp_path, name).read_text().count("time,reader") == 1


def test_readings_confirmed_before_a_sigkill_are_all_on_disk(tmp_path):
    done = multiprocessing.Event()

    def endless():
        k = 0
        while True:
            append_reading(tmp_path, "ann", {"image_id": f"img{k}", "reading": "2"})
            k += 1
            if k == 50:
                done.set()

    worker = multiprocessing.Process(target=endless)
    worker.start()
    assert done.wait(60)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(10)
    readings = read_readings(tmp_path)
    assert len(readings) >= 50
    assert list(readings["image_id"]) == [f"img{k}" for k in range(len(readings))]  # none lost, in order


def test_a_bad_reading_in_a_file_is_one_line_naming_its_row(tmp_path):
    (tmp_path / "readings").mkdir()
    (tmp_path / "readings" / "ann.csv").write_text("reader,image_id,reading\nann,x,2\nann,y,E\n")
    with pytest.raises(DataError, match=r"ann.csv: row 3: reading 'E'"):
        read_readings(tmp_path)
