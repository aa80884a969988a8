"""Exceptions raised for bad molecular input.

Every error the data layer raises for bad input is a :class:`DataError` with a one-line message
that names the file, the line (physical line number in the file, header = line 1), the column and
the offending value, so a command-line tool can print ``str(err)`` and nothing else.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataError", "InvalidSmilesError"]


class DataError(ValueError):
    """Bad input data: a missing or malformed file, column, value, dataset name or split.

    The message is always a single line; callers (the CLI) print ``str(err)`` as is.
    """

    def __init__(self, message: str) -> None:
        # Collapse any newline that crept in from third-party messages: the contract is one line.
        super().__init__(" ".join(str(message).split()))


class InvalidSmilesError(DataError):
    """A SMILES string RDKit cannot turn into a molecule.

    Parameters
    ----------
    smiles : str
        The offending SMILES as read from the input.
    reason : str
        RDKit's explanation (parse or sanitisation error).
    path : str or Path, optional
        The file the SMILES came from.
    line : int, optional
        Physical line number in ``path`` (the header is line 1).
    column : str, optional
        Name of the SMILES column.
    hint : str, optional
        Extra advice appended to the message (e.g. how to skip invalid rows).
    """

    def __init__(
        self,
        smiles: str,
        reason: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.smiles = smiles
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if line is not None:
                where += f" line {line}"
            where += ": "
        col = f" in column '{column}'" if column else ""
        message = f"{where}invalid SMILES {smiles!r}{col}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
