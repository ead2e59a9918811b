"""Labelled sentences from TSV/CSV files, checked before anything is trained.

Every way a file can be malformed fails with a ``DataFormatError`` (a ``ValueError``) whose
message starts ``<path>:<line>:`` and says how to fix it: an empty file, a header with no rows,
bytes that are not UTF-8, a field over ``csv.field_size_limit()``, a CSV quote that is never
closed or is followed by more text, a row with the wrong number of fields, an empty label, a
label outside the known set. The line is where the offending record starts (a quoted CSV
field may span lines). TSV is read with quoting off (sentences keep their quotes); CSV in
``strict`` mode, so a broken quote is an error rather than a silently merged row.

String labels become ids: ``label_names`` when given, else the sorted set of the training
file's labels (numerically when all are integers; a file mixing integer and other labels is
refused, since one stray label would silently become an extra class).
"""

from __future__ import annotations

import contextlib
import csv
import os
from typing import Iterator, List, Optional, Sequence, Tuple


class DataFormatError(ValueError):
    """A row of a data file cannot be read; the message names the file and line."""


def _column(header: Optional[List[str]], column, path: str, line: int) -> int:
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit()):
        return int(column)
    if header is None:
        raise DataFormatError(f"{path}: column {column!r} is a name but has_header=False; give its index")
    if column not in header:
        raise DataFormatError(f"{path}:{line}: no column {column!r} in the header {header}")
    return header.index(column)


def _not_utf8(path: str) -> DataFormatError:
    """The error for the first line of ``path`` that is not UTF-8, found by rescanning the raw bytes.

    The text reader decodes in blocks, so its own position can be lines away from the bad byte.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):  # b"\n" never occurs inside a multi-byte UTF-8 character
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return DataFormatError(
                    f"{path}:{number}: byte {raw[err.start]:#04x} at byte offset {err.start} of the line is not "
                    f"UTF-8 text; re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 old > new`)")
    return DataFormatError(f"{path}: not UTF-8 text; re-encode the file as UTF-8")


def _malformed(path: str, start: int, end: int, err: csv.Error, delimiter: str) -> DataFormatError:
    """A ``csv.Error`` as a ``DataFormatError`` for the record that starts on line ``start``."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    runs_on = f" (the record runs on to line {end})" if end > start else ""
    reason = str(err)
    if "field larger than field limit" in reason:
        hint = (f"a field is longer than csv.field_size_limit() = {csv.field_size_limit()} characters{runs_on}. "
                + ("This is usually a quote that opens a field and is never closed, so the field swallows the "
                   "lines after it: fix the quoting. " if kind == "CSV" else "")
                + "If the text really is this long, shorten it (only max_len tokens are used) or raise the "
                  "limit with csv.field_size_limit(n) before loading")
    elif "unexpected end of data" in reason:
        hint = (f"a quoted field opens here and its closing quote is never found{runs_on}; close the quote "
                "(a quote inside a quoted field is written twice: \"\")")
    elif "expected after" in reason:
        hint = (f"text follows the closing quote of a quoted field ({reason}); quote the whole field and "
                "double the quotes inside it, e.g. \"say \"\"hi\"\" now\"")
    else:
        hint = f"malformed {kind} record{runs_on}: {reason}"
    return DataFormatError(f"{path}:{start}: {hint}")


def _records(path: str, delimiter: str) -> Iterator[Tuple[int, List[str]]]:
    """``(line where the record starts, fields)`` for each non-blank record, errors as ``DataFormatError``."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV text keeps its quotes
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the header
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as err:
                raise _not_utf8(path) from err
            except csv.Error as err:
                raise _malformed(path, start, reader.line_num, err, delimiter) from err
            if row:
                yield start, row
            start = reader.line_num + 1


def read_rows(path: str, delimiter: str, text_column, label_column, has_header: bool = True
              ) -> Tuple[List[str], List[str], List[int]]:
    """``(texts, labels, line numbers)``, as strings; every row must have the header's (or the first row's) width.

    A file without data rows is an error: an empty split would only fail later, far from its cause.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} not found")
    with contextlib.closing(_records(path, delimiter)) as records:
        return _read(records, path, delimiter, text_column, label_column, has_header)


def _read(records, path, delimiter, text_column, label_column, has_header):
    header, header_line = None, 0
    if has_header:
        first = next(records, None)
        if first is None:
            raise DataFormatError(f"{path}:1: the file is empty; expected a header line naming the columns "
                                  f"(separated by {delimiter!r}), then one row per example")
        header_line, header = first
    width = len(header) if header else None
    t = _column(header, text_column, path, header_line)
    y = _column(header, label_column, path, header_line)
    texts, labels, lines = [], [], []
    for line, row in records:
        width = width or len(row)
        if len(row) != width:
            raise DataFormatError(f"{path}:{line}: expected {width} fields separated by "
                                  f"{delimiter!r}, got {len(row)}: {row!r}")
        if max(t, y) >= width:
            raise DataFormatError(f"{path}:{line}: column index {max(t, y)} but rows have {width} fields")
        label = row[y].strip()
        if not label:
            raise DataFormatError(f"{path}:{line}: empty label in column {label_column!r}; every row needs one")
        texts.append(row[t])
        labels.append(label)
        lines.append(line)
    if not texts:
        where = f"{path}:{header_line}: only a header line," if has_header else f"{path}:1: the file has"
        raise DataFormatError(f"{where} no data rows; a split needs at least one labelled example")
    return texts, labels, lines


def _is_int(label: str) -> bool:
    return label.lstrip("-").isdigit()


def infer_label_names(labels: Sequence[str], path: Optional[str] = None,
                      lines: Optional[Sequence[int]] = None) -> Tuple[str, ...]:
    """Sorted distinct labels; numeric order when every label is an integer.

    Integer and other labels mixed in one file are refused, naming the first label of the
    rarer kind (``path:line`` when given, else its row number).
    """
    distinct = set(labels)
    ints = {s for s in distinct if _is_int(s)}
    if ints == distinct:
        return tuple(sorted(distinct, key=int))
    if ints:
        odd_is_int = sum(_is_int(s) for s in labels) * 2 < len(labels)
        i = next(i for i, s in enumerate(labels) if _is_int(s) == odd_is_int)
        example = next(s for s in labels if _is_int(s) != odd_is_int)
        where = f"{path}:{lines[i]}" if path and lines else f"row {i + 1} of the training file"
        what = "is an integer" if odd_is_int else "is not an integer"
        raise DataFormatError(f"{where}: label {labels[i]!r} {what}, unlike the file's other labels (e.g. "
                              f"{example!r}); fix the row, or set data.label_names to the full list of labels")
    return tuple(sorted(distinct))


def label_ids(labels: Sequence[str], names: Sequence[str], path: str, lines: Sequence[int]) -> List[int]:
    """Ids of ``labels`` in ``names``; an unknown label fails naming its file and line."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for i, label in enumerate(labels):
        if label not in index:
            raise DataFormatError(f"{path}:{lines[i]}: label {label!r} is not one of the known labels "
                                  f"{list(names)} (set data.label_names to fix the set)")
        ids.append(index[label])
    return ids
