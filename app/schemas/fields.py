"""Field types the API's schemas share."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import ValidationError, fields, validate

OUT_OF_RANGE = "is outside the years 1 to 9999 in UTC"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
IDENTIFIER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*\Z")  # \Z: no final newline
IDENTIFIER_LENGTH = 100
METADATA_MAX_KEYS, METADATA_MAX_BYTES, METADATA_KEY_LENGTH = 50, 8192, 100


class Int64(fields.Integer):
    """A JSON integer (not a float, string or boolean) that fits int64."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer")
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValidationError("must fit a signed 64-bit integer")
        return value


class Rfc3339(fields.Field):
    """An RFC 3339 timestamp with a time zone; parsed to an aware UTC datetime."""

    _pattern = re.compile(
        r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
    )

    def _deserialize(self, value, attr, data, **kwargs):
        return parse_rfc3339(value)


class TimeZone(fields.String):
    """An IANA time zone name, such as Asia/Kolkata."""

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs)
        if len(name) > 64 or ".." in name or name.startswith("/"):
            raise ValidationError("is not an IANA time zone name")
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValidationError("is not an IANA time zone name") from None
        return name


class PeriodBound(fields.Field):
    """An RFC 3339 timestamp or a `YYYY-MM-DD` date (UTC midnight).

    With `end_of_day=True` a bare date means the end of that day, so the
    period includes the whole day.
    """

    def __init__(self, *, end_of_day: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.end_of_day = end_of_day

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise ValidationError("is not a valid date") from None
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            try:
                return start + timedelta(days=1) if self.end_of_day else start
            except OverflowError:
                raise ValidationError(OUT_OF_RANGE) from None
        return parse_rfc3339(value)


def parse_rfc3339(value) -> datetime:
    """Parse an RFC 3339 timestamp; sub-microsecond digits are truncated."""
    if not isinstance(value, str) or not Rfc3339._pattern.match(value):
        raise ValidationError("must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z")
    text = value.replace("t", "T").replace(" ", "T").replace("z", "Z").replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    if dot:
        digits = re.match(r"\d+", rest).group(0)
        text = f"{main}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        raise ValidationError("is not a valid timestamp") from None
    except OverflowError:
        raise ValidationError(OUT_OF_RANGE) from None


INDEXED_BYTES = 1500


def indexed_string(max_length: int, **kwargs) -> fields.String:
    """A string stored in an indexed property: Datastore caps those at 1500 UTF-8 bytes."""
    return fields.String(validate=[validate.Length(min=1, max=max_length), fits_index],
                         **kwargs)


def fits_index(value: str) -> None:
    if len(value.encode("utf-8")) > INDEXED_BYTES:
        raise ValidationError(f"may take at most {INDEXED_BYTES} bytes as UTF-8")


def identifier(max_length: int = IDENTIFIER_LENGTH, **kwargs) -> fields.String:
    """A name made of letters, digits and `_ . : -`."""
    return fields.String(
        validate=[validate.Length(min=1, max=max_length),
                  validate.Regexp(IDENTIFIER, error="may hold only letters, digits and _ . : -")],
        **kwargs,
    )


class JsonObject(fields.Dict):
    """A JSON object of bounded size (metadata)."""

    def __init__(self, max_keys: int = METADATA_MAX_KEYS, max_bytes: int = METADATA_MAX_BYTES,
                 **kwargs):
        super().__init__(keys=fields.String(validate=validate.Length(min=1,
                                                                     max=METADATA_KEY_LENGTH)),
                         **kwargs)
        self.max_keys = max_keys
        self.max_bytes = max_bytes

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        if len(result) > self.max_keys:
            raise ValidationError(f"may hold at most {self.max_keys} keys")
        if len(json.dumps(result)) > self.max_bytes:
            raise ValidationError(f"may take at most {self.max_bytes} bytes as JSON")
        return result
