"""File helpers for the data layer: a strict CSV reader with line numbers, and atomic writes.

The atomic writes are :mod:`kangnn.files`' (re-exported here): a temporary file in the
destination folder moved into place with ``os.replace``, so an interrupted or failed run never
leaves a half-written file behind.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from kangnn.data.errors import DataError
from kangnn.files import atomic_write, atomic_write_json, make_dirs, remove_dirs

__all__ = [
    "CsvTable",
    "atomic_write",
    "atomic_write_json",
    "make_dirs",
    "read_csv",
    "remove_dirs",
    "write_invalid_rows",
]


class CsvTable:
    """A CSV file opened for reading: the header, then data rows with their line numbers.

    Use :func:`read_csv` to build one; iterate over :meth:`rows`.

    Attributes
    ----------
    path : Path
        The file.
    header : list of str
        Column names, stripped of surrounding whitespace.
    header_line : int
        Physical line number of the header (1 unless blank lines precede it).
    """

    def __init__(
        self, path: Path, header: list[str], handle: IO[str], reader: Any, header_line: int = 1
    ) -> None:
        self.path = path
        self.header = header
        self.header_line = header_line
        self._handle = handle
        self._reader = reader

    def column_index(self, column: str, role: str) -> int:
        """Index of a named column, with a clear error if it is missing or duplicated.

        Parameters
        ----------
        column : str
            Column name as written in the header (surrounding whitespace ignored).
        role : str
            What the column is for ("SMILES", "target", "split"), used in the message.
        """
        name = column.strip()
        hits = [i for i, h in enumerate(self.header) if h == name]
        if not hits:
            raise DataError(
                f"{self.path} line {self.header_line}: no {role} column {column!r} in the header "
                f"(columns: {', '.join(repr(h) for h in self.header)})"
            )
        if len(hits) > 1:
            raise DataError(
                f"{self.path} line {self.header_line}: {role} column {column!r} appears "
                f"{len(hits)} times in the header"
            )
        return hits[0]

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(line, fields)`` for every non-blank data row.

        ``line`` is the physical line number where the record starts (the header is line 1),
        i.e. what a text editor shows. Blank lines are skipped. A row whose number of fields
        differs from the header raises :class:`DataError`.
        """
        width = len(self.header)
        prev = self._reader.line_num
        try:
            for fields in self._reader:
                line = prev + 1
                prev = self._reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) != width:
                    raise DataError(
                        f"{self.path} line {line}: {len(fields)} fields, but the header has {width}"
                    )
                yield line, fields
        except csv.Error as err:
            raise DataError(f"{self.path} line {prev + 1}: malformed CSV: {err}") from err
        except UnicodeDecodeError as err:
            raise DataError(
                f"{self.path}: not UTF-8 text ({err.reason} at byte {err.start})"
            ) from err

    def close(self) -> None:
        """Close the underlying file."""
        self._handle.close()

    def __enter__(self) -> CsvTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_csv(path: str | Path) -> CsvTable:
    """Open a comma-separated file with a header row.

    Parameters
    ----------
    path : str or Path
        The CSV file (UTF-8, optional BOM, LF or CRLF line endings).

    Returns
    -------
    CsvTable
        Header and row iterator; use it as a context manager.

    Raises
    ------
    DataError
        If the file does not exist, is not a regular file, is empty, is not UTF-8, or has a
        header but no data rows (checked lazily: see :meth:`CsvTable.rows`).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    try:
        handle = open(p, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise DataError(f"{p}: cannot open: {err.strerror or err}") from err
    try:
        reader = csv.reader(handle)
        header: list[str] | None = None
        try:
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    header = [f.strip() for f in fields]
                    break
        except csv.Error as err:
            raise DataError(f"{p} line {reader.line_num}: malformed CSV header: {err}") from err
        except UnicodeDecodeError as err:
            raise DataError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from err
        if header is None:
            raise DataError(f"{p}: the file is empty (expected a header row and data rows)")
    except BaseException:
        handle.close()
        raise
    return CsvTable(p, header, handle, reader, header_line=reader.line_num)


def write_invalid_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write skipped rows as CSV with columns ``line,smiles,reason``, atomically.

    Parameters
    ----------
    rows : list of dict
        Records with keys ``line``, ``smiles`` and ``reason`` (``MoleculeDataset.invalid_rows``).
    path : str or Path
        Destination CSV; a header-only file is written when ``rows`` is empty.
    """
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["line", "smiles", "reason"])
    for row in rows:
        writer.writerow([row["line"], row["smiles"], row["reason"]])
    data = buf.getvalue().encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))
