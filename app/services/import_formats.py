"""Reading an import's input, record by record: NDJSON, CSV, CloudEvents; plain or gzip.

An input is opened by a function (`Opener`) rather than held, because an import reads it
twice: once to validate every line, once to write (nothing is kept between the two, so
memory does not grow with the input). Gzip is recognised by its magic bytes, not by a
file name, so `usage.ndjson.gz`, `usage.csv` that is really gzip, and a gzip HTTP body
all work.

A record is one line of NDJSON (a native event, or a CloudEvent when it has
`specversion`) or one row of CSV, turned into the native event's shape
(`{"meterId" | "eventName", "userId", "value", "timestamp", "idempotency", "dimensions",
"metadata"}`). The fields an export writes beside them (`EXPORT_COLUMNS`: `id`, `status`,
`createdAt`, `amends`, `amendedBy`) are read too: they describe the event in the org it
came from and are dropped; a `cancelled` event is skipped (it is in no summary there, so
it must be in none here).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

GZIP_MAGIC = b"\x1f\x8b"
FORMATS = ("auto", "ndjson", "csv")
#: Columns a CSV may have besides `dimensions.NAME` and `metadata.NAME`.
CSV_COLUMNS = ("eventName", "meterId", "userId", "value", "timestamp", "idempotency")
#: Columns an export writes that the import reads but does not store: the event's id and
#: status, and (issue 17's corrections) when it was recorded and its amendment links, all
#: of the org it came from.
EXPORT_COLUMNS = ("id", "status", "createdAt", "amends", "amendedBy")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")

Opener = Callable[[], IO[bytes]]
#: A broken gzip stream, or CSV that is not UTF-8: the input cannot be read further.
_UNREADABLE = (OSError, EOFError, zlib.error, UnicodeDecodeError)


class InputError(Exception):
    """The input as a whole cannot be read (a CSV header naming an unknown column, a
    broken gzip stream): nothing of it is imported."""

    def __init__(self, message: str, line: int = 1):
        super().__init__(message)
        self.message, self.line = message, line


@dataclass
class Record:
    """One record of the input: its line number (1-based, of the decompressed text), its
    text (for the reject file), and either an item or problems."""

    line: int
    text: str
    kind: str = "event"  # event | cloudevent | skipped (a cancelled event of an export)
    item: dict[str, Any] | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (field, message)


def file_opener(path: str) -> Opener:
    """Opens the file at `path`, decompressed when it starts with gzip's magic bytes."""

    def open_it() -> IO[bytes]:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        if raw.peek(2)[:2] == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        return raw

    return open_it


def bytes_opener(data: bytes) -> Opener:
    """Opens an in-memory input (an HTTP body), decompressed when it is gzip."""

    def open_it() -> IO[bytes]:
        if data[:2] == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")  # type: ignore[return-value]
        return io.BytesIO(data)

    return open_it


def detect(opener: Opener) -> str:
    """`ndjson` when the first non-blank character is `{`, else `csv`."""
    with opener() as stream:
        try:
            head = stream.read(4096)
        except _UNREADABLE as exc:
            raise InputError(f"the input cannot be read: {exc}") from None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return "ndjson" if text[:1] == b"{" else "csv"


def records(opener: Opener, kind: str = "auto") -> Iterator[Record]:
    """Every record of the input, in order; blank lines are skipped."""
    if kind == "auto":
        kind = detect(opener)
    with opener() as stream:
        try:
            yield from (_ndjson(stream) if kind == "ndjson" else _csv(stream))
        except _UNREADABLE as exc:
            raise InputError(f"the input cannot be read: {exc}") from None


# -- NDJSON ------------------------------------------------------------------------------


def _ndjson(stream: IO[bytes]) -> Iterator[Record]:
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if number == 1:
            text = text.lstrip("\ufeff")
        try:
            item = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield Record(number, text, problems=[("", f"not valid JSON: {exc}")])
            continue
        if not isinstance(item, dict):
            yield Record(number, text, problems=[("", "a line must be one JSON object")])
            continue
        if "specversion" in item:
            yield Record(number, text, "cloudevent", item)
            continue
        if set(item) == {"export"} and isinstance(item["export"], dict):
            # The trailer an HTTP export ends with ({"export": {"complete", "count",
            # "cursor"}}): a file saved from it imports as it is.
            yield Record(number, text, "skipped", None)
            continue
        yield _exported(Record(number, text, item=item))


def _exported(record: Record) -> Record:
    """A native record without the fields an export adds; `skipped` if it was cancelled."""
    item = record.item
    assert item is not None
    status = item.pop("status", None)
    for name in EXPORT_COLUMNS:
        item.pop(name, None)
    if status in (None, "", "active"):
        return record
    if status == "cancelled":
        record.kind = "skipped"
        return record
    record.problems.append(("status", "status must be active or cancelled"))
    record.item = None
    return record


# -- CSV ---------------------------------------------------------------------------------


def _header(names: list[str]) -> list[tuple[str, str]]:
    """(where, name) of each column: a top-level field, a dimension or a metadata key."""
    columns = []
    for name in names:
        name = name.strip()
        if name in CSV_COLUMNS or name in EXPORT_COLUMNS or name == "metadata":
            columns.append(("", name))
        elif name.startswith("dimensions.") and len(name) > len("dimensions."):
            columns.append(("dimensions", name[len("dimensions.") :]))
        elif name.startswith("metadata.") and len(name) > len("metadata."):
            columns.append(("metadata", name[len("metadata.") :]))
        else:
            raise InputError(
                f"unknown CSV column {name[:60]!r}: columns are {', '.join(CSV_COLUMNS)}, "
                "dimensions.NAME, metadata.NAME and metadata (a JSON object)"
            )
    if len(set(columns)) != len(columns):
        raise InputError("a CSV column is named twice")
    return columns


def _csv(stream: IO[bytes]) -> Iterator[Record]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        names = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"the CSV header cannot be read: {exc}") from None
    columns = _header(names)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Record(reader.line_num, "", problems=[("", f"not valid CSV: {exc}")])
            continue
        if not any(cell.strip() for cell in row):
            continue
        yield _row(reader.line_num, row, columns)


def _row(number: int, row: list[str], columns: list[tuple[str, str]]) -> Record:
    text = _csv_text(row)
    if len(row) != len(columns):
        return Record(
            number,
            text,
            problems=[("", f"the row has {len(row)} cells, the header {len(columns)}")],
        )
    item: dict[str, Any] = {}
    problems = []
    whole_metadata: dict[str, Any] = {}
    for (where, name), cell in zip(columns, row):
        if cell == "":
            continue  # an empty cell is an absent field
        if where:
            item.setdefault(where, {})[name] = cell
        elif name == "value":
            if _INTEGER.fullmatch(cell.strip()):
                item["value"] = int(cell)
            else:
                problems.append(("value", f"value must be an integer, not {cell[:40]!r}"))
        elif name == "metadata":
            whole = _json_object(cell)
            if whole is None:
                problems.append(("metadata", "the metadata cell must hold a JSON object"))
            else:
                whole_metadata = whole
        else:
            item[name] = cell
    if whole_metadata:
        given = item.setdefault("metadata", {})
        for key in whole_metadata.keys() & given.keys():
            problems.append(("metadata", f"metadata {key[:60]!r} is given in two columns"))
        given.update({key: whole_metadata[key] for key in whole_metadata.keys() - given.keys()})
    if problems:
        return Record(number, text, problems=problems)
    return _exported(Record(number, text, item=item))


def _json_object(cell: str) -> dict[str, Any] | None:
    """A `metadata` cell's JSON object (what an export writes), or None if it is not one."""
    try:
        parsed = json.loads(cell)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _csv_text(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()
