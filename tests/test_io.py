"""Atomic outputs and progress lines (brainalign.io)."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pytest

from brainalign.io import Progress, atomic_path, write_csv


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "x.csv"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_finished_outputs_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "a.csv")
        assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
        os.umask(0o007)
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "b.csv")
        assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o660
    finally:
        os.umask(old)


def test_progress_logs_count_percent_and_eta_at_most_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="brainalign")
    p = Progress(10, "features", "images", seconds=0.0)
    for _ in range(10):
        p.step()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 9  # not after the last item
    assert lines[4].startswith("features: 5/10 images (50%)") and "ETA" in lines[4]
    caplog.clear()
    quiet = Progress(10, "features", "images", seconds=3600)
    for _ in range(10):
        quiet.step()
    assert not caplog.records


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_of_that_output(tmp_path):
    out = tmp_path / "x.csv"
    left = tmp_path / ".x.csv.ab12cd.tmp"  # what a SIGKILLed atomic write leaves
    left.write_text("half")
    other = tmp_path / ".y.csv.ab12cd.tmp"  # another output's: not this job's to remove
    other.write_text("half")
    write_csv(pd.DataFrame({"a": [1]}), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.csv.ab12cd.tmp", "x.csv"]
