"""CSV and Parquet tables streamed through DuckDB: the rows of a ``table`` dataset.

Opening a table never holds it in Python: DuckDB checks every feature column with one streamed
aggregate query (missing, non-numeric and non-finite values, each with its first row) and reads
only the label column; :class:`TableRows` then reads the rows a request touches, by row number.
Parquet files are read in place (``file_row_number``); a CSV file, which has no row numbers, is
streamed once into a Parquet copy under ``$LOUPE_HOME/tables`` (named by the file's path, size and
modification time, so an edited file gets a fresh copy). Paths are bound as parameters, never
spliced into SQL, except the copy's own name, which Loupe makes from a hash.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from data.base import DatasetError
from data.lazy import Rows

CSV_QUERY = ("SELECT * FROM read_csv_auto(?, header=true, skip=0, delim=',', quote='\"', escape='\"', "
             "strict_mode=true, sample_size=-1)")
SUFFIXES = (".csv", ".parquet", ".pq")
SOURCE = "read_parquet(?, file_row_number=true)"
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "BOOLEAN", "DECIMAL")


def quote(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def _connect() -> Any:
    import duckdb

    return duckdb.connect()


def _csv_copy(dataset_id: str, path: Path) -> Path:
    """The Parquet copy of a CSV file (made once, streamed by DuckDB, published atomically)."""
    import duckdb

    from store.paths import loupe_home

    st = path.stat()
    name = hashlib.sha256(f"csv-v1|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    target = loupe_home() / "tables" / f"{name}.parquet"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with _connect() as con:
            con.execute(f"COPY ({CSV_QUERY}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' (FORMAT parquet)",
                        [str(path)])
        os.replace(tmp, target)
    except duckdb.Error as err:
        raise DatasetError(f"dataset {dataset_id!r}: cannot read {str(path)!r} (rows with a different number of "
                           f"fields than the header?): {str(err).splitlines()[0]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def parquet_source(dataset_id: str, path: Path) -> Path:
    """The Parquet file that DuckDB reads for the table at ``path``."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(f"dataset {dataset_id!r}: {str(path)!r} must end in one of {sorted(SUFFIXES)} for kind "
                           "'table'")
    return _csv_copy(dataset_id, path) if suffix == ".csv" else path


def schema(dataset_id: str, source: Path, shown: Path) -> tuple[list[tuple[str, str]], int]:
    """(column name, DuckDB type) of every column, and the row count."""
    import duckdb

    try:
        with _connect() as con:
            columns = [(r[0], r[1]) for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(source)]).fetchall()]
            n_rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(source)]).fetchone()[0]
    except duckdb.Error as err:
        raise DatasetError(f"dataset {dataset_id!r}: cannot read {str(shown)!r}: {str(err).splitlines()[0]}") from None
    return columns, int(n_rows)


def _checks(name: str, kind: str) -> list[str]:
    """Aggregates that find a feature column's first missing, non-numeric and non-finite row."""
    q = quote(name)
    if kind.startswith(_NUMERIC):
        value, text = f"{q}::DOUBLE", "NULL"
    else:
        value, text = f"TRY_CAST({q} AS DOUBLE)", f"{q}"
    return [f"min(file_row_number) FILTER (WHERE {q} IS NULL)",
            f"min(file_row_number) FILTER (WHERE {q} IS NOT NULL AND {value} IS NULL)",
            f"arg_min({text}::VARCHAR, file_row_number) FILTER (WHERE {q} IS NOT NULL AND {value} IS NULL)",
            f"min(file_row_number) FILTER (WHERE NOT isfinite({value}))"]


def check_features(dataset_id: str, source: Path, columns: list[tuple[str, str]]) -> None:
    """One streamed pass over the feature columns; the first bad column (in file order) raises
    DatasetError naming it and its first bad row."""
    for name, kind in columns:
        if not (kind.startswith(_NUMERIC) or kind == "VARCHAR"):
            raise DatasetError(f"dataset {dataset_id!r}: feature column {name!r} is not numeric (type {kind})")
    if not columns:
        return
    aggregates = [a for name, kind in columns for a in _checks(name, kind)]
    with _connect() as con:
        found = con.execute(f"SELECT {', '.join(aggregates)} FROM {SOURCE}", [str(source)]).fetchone()
    for k, (name, _) in enumerate(columns):
        missing, text_row, text, infinite = found[4 * k:4 * k + 4]
        where = f"dataset {dataset_id!r}: feature column {name!r}"
        if missing is not None:
            raise DatasetError(f"{where} has missing values (first at row {missing})")
        if text_row is not None:
            raise DatasetError(f"{where} is not numeric (row {text_row} holds {text!r}); every column other than "
                               "the label must be a number")
        if infinite is not None:
            raise DatasetError(f"{where} has NaN or infinite values (first at row {infinite})")


def read_column(source: Path, name: str) -> np.ndarray:
    """One whole column in row order (a masked array where it has NULLs), e.g. the labels."""
    with _connect() as con:
        return con.execute(f"SELECT {quote(name)} FROM {SOURCE} ORDER BY file_row_number",
                           [str(source)]).fetchnumpy()[name]


class TableRows(Rows):
    """Feature rows of a Parquet file, read through DuckDB by row number when indexed."""

    def __init__(self, source: Path, features: list[str], n_rows: int) -> None:
        self.source, self.features, self.n_rows = source, list(features), n_rows
        self._reads = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_rows, len(self.features))

    def read(self, positions: np.ndarray) -> np.ndarray:
        wanted, where = np.unique(positions, return_inverse=True)
        columns = ", ".join(f"{quote(c)}::DOUBLE" for c in self.features)
        with _connect() as con:
            found = con.execute(
                f"SELECT {columns} FROM {SOURCE} WHERE file_row_number IN (SELECT unnest(?::BIGINT[])) "
                "ORDER BY file_row_number", [str(self.source), wanted.tolist()]).fetchnumpy()
        self._reads += 1
        rows = np.stack([np.asarray(v, dtype=np.float32) for v in found.values()], axis=1)
        return rows[where]

    def stats(self) -> dict[str, int]:
        return {"reads": self._reads}
