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


def test_content_digests_set_aside_the_code_version_and_row_groups_only(tmp_path, monkeypatch):
    """leam digest (#22 bar 2): two runs' results compared by content."""
    import hashlib

    import pyarrow.parquet as pq

    from leam.core import codeversion
    from leam.core.io import ParquetSink, write_parquet
    from leam.core.resultsdir import content_digests

    table = pa.table({"identity": ["a", "a", "b"], "v": [1.0, 2.0, 3.0]})
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        (d / "tables").mkdir(parents=True)
        (d / "tables" / "t.csv").write_text("x\n1\n")
    write_parquet(table, one / "p.parquet")
    monkeypatch.setattr(codeversion, "code_version", lambda: "leam 9.9.9+000000000000")
    with ParquetSink(two / "p.parquet", table.schema, row_group_size=1) as sink:  # three row groups
        sink.add(table)
    assert pq.ParquetFile(two / "p.parquet").metadata.num_row_groups == 3
    assert io.code_version_of(two / "p.parquet") == "leam 9.9.9+000000000000" != io.code_version_of(one / "p.parquet")
    assert (one / "p.parquet").read_bytes() != (two / "p.parquet").read_bytes()
    a, b = content_digests(one), content_digests(two)
    assert a == b and set(a) == {"p.parquet", "tables/t.csv"}
    assert a["tables/t.csv"] == hashlib.sha256(b"x\n1\n").hexdigest()
    write_parquet(table.set_column(1, "v", pa.array([1.0, 2.0, 3.5])), two / "p.parquet")  # one value
    assert content_digests(two)["p.parquet"] != a["p.parquet"]
    write_parquet(table.take([1, 0, 2]), two / "p.parquet")  # the same rows in another order
    assert content_digests(two)["p.parquet"] != a["p.parquet"]
