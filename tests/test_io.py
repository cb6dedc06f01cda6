"""Atomic Parquet writes (leam.core.io): a write that fails leaves the previous file as it was."""

import errno

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leam.core import io

SCHEMA = pa.schema([("x", pa.int64())])


def _old_file(path):
    io.write_parquet(pa.table({"x": [7, 8]}, schema=SCHEMA), path)
    return path.read_bytes()


def test_the_sink_writes_every_row_in_row_groups(tmp_path):
    path = tmp_path / "t.parquet"
    with io.ParquetSink(path, SCHEMA, row_group_size=3) as sink:
        sink.add([{"x": i} for i in range(5)])
        sink.add(pa.table({"x": [5, 6]}, schema=SCHEMA))
    table = io.read_parquet(path)
    assert table.column("x").to_pylist() == list(range(7))
    assert [pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(3)] == [3, 3, 1]
    assert not list(tmp_path.glob(".t.parquet.*"))


@pytest.mark.parametrize("fail_at", ["last row group", "footer"])
def test_a_sink_that_fails_on_exit_raises_and_keeps_the_old_file(tmp_path, monkeypatch, fail_at):
    """The disk filling up while the last row group or the footer is written must not publish a
    truncated file, nor be swallowed (it was, before: a `return` in a `finally`)."""
    path = tmp_path / "t.parquet"
    old = _old_file(path)
    sink = io.ParquetSink(path, SCHEMA, row_group_size=100)
    full = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space left"), sink:
        sink.add([{"x": 1}, {"x": 2}])
        writer = sink._writer
        if fail_at == "last row group":
            monkeypatch.setattr(writer, "write_table", _raise(full), raising=False)
        else:
            real_close = writer.close
            calls = []

            def close():  # the first close (which writes the footer) fails, the clean-up close works
                calls.append(1)
                if len(calls) == 1:
                    raise full
                real_close()

            monkeypatch.setattr(writer, "close", close, raising=False)
    assert path.read_bytes() == old
    assert not list(tmp_path.glob(".t.parquet.*"))


def test_an_exception_in_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    old = _old_file(path)
    with pytest.raises(KeyError), io.ParquetSink(path, SCHEMA) as sink:
        sink.add([{"x": 1}])
        raise KeyError("boom")
    assert path.read_bytes() == old
    assert not list(tmp_path.glob(".t.parquet.*"))


def _raise(exc):
    def f(*args, **kwargs):
        raise exc

    return f
