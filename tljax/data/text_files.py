"""Labelled sentences from TSV/CSV files, checked before anything is trained.

A row with the wrong number of fields, a missing file or a label outside the known set fails
with the file and line in the message. String labels become ids: ``label_names`` when given,
else the sorted set of the training file's labels (numerically when all are integers).
"""

from __future__ import annotations

import csv
import os
from typing import List, Optional, Sequence, Tuple


class DataFormatError(ValueError):
    """A row of a data file cannot be read; the message names the file and line."""


def _column(header: Optional[List[str]], column, path: str) -> int:
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit()):
        return int(column)
    if header is None:
        raise DataFormatError(f"{path}: column {column!r} is a name but has_header=False; give its index")
    if column not in header:
        raise DataFormatError(f"{path}:1: no column {column!r} in the header {header}")
    return header.index(column)


def read_rows(path: str, delimiter: str, text_column, label_column, has_header: bool = True
              ) -> Tuple[List[str], List[str], List[int]]:
    """``(texts, labels, line numbers)``, as strings; every row must have the header's (or the first row's) width."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} not found")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV text keeps its quotes
    texts, labels, lines = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None) if has_header else None
        width = len(header) if header else None
        t, y = _column(header, text_column, path), _column(header, label_column, path)
        for row in reader:
            if not row:
                continue
            width = width or len(row)
            if len(row) != width:
                raise DataFormatError(f"{path}:{reader.line_num}: expected {width} fields separated by "
                                      f"{delimiter!r}, got {len(row)}: {row!r}")
            if max(t, y) >= width:
                raise DataFormatError(f"{path}:{reader.line_num}: column index {max(t, y)} but rows have "
                                      f"{width} fields")
            texts.append(row[t])
            labels.append(row[y].strip())
            lines.append(reader.line_num)
    return texts, labels, lines


def infer_label_names(labels: Sequence[str]) -> Tuple[str, ...]:
    """Sorted distinct labels; numeric order when every label is an integer."""
    distinct = set(labels)
    if all(s.lstrip("-").isdigit() for s in distinct):
        return tuple(sorted(distinct, key=int))
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
