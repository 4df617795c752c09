"""Field types the API's schemas share."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from marshmallow import ValidationError, fields, validate

OUT_OF_RANGE = "is outside the years 1 to 9999 in UTC"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# Patterns are written `^...$` so that OpenAPI (ECMA-262 regexes) can show them as they are,
# and always applied with `fullmatch`: Python's `$` also matches before a final newline.
IDENTIFIER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
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

    _pattern = re.compile(  # fullmatch: `$` would let a final newline through
        r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
    )

    def _deserialize(self, value, attr, data, **kwargs):
        return parse_rfc3339(value)


#: Files of a tz directory that are not zones a caller may mean, which
#: `available_timezones` lists when they are there: the server's own zone, the
#: "-00" placeholder zone, and the default rules of POSIX TZ strings.
NOT_ZONE_NAMES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def iana_zone_names() -> frozenset[str]:
    """The zone names of the installed tz database, read once.

    `ZoneInfo` opens any zone file under its search path, so `localtime`, `Factory`,
    `posix/...`, `right/...` and relative paths would be taken as zones; only the
    database's list of zone names (less NOT_ZONE_NAMES) is accepted.
    """
    return frozenset(available_timezones()) - NOT_ZONE_NAMES


class TimeZone(fields.String):
    """An IANA time zone name, such as Asia/Kolkata."""

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs)
        if name != "UTC" and name not in iana_zone_names():
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
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            try:
                return start + timedelta(days=1) if self.end_of_day else start
            except OverflowError:
                raise ValidationError(OUT_OF_RANGE) from None
        return parse_rfc3339(value)


def parse_rfc3339(value) -> datetime:
    """Parse an RFC 3339 timestamp; sub-microsecond digits are truncated."""
    if not isinstance(value, str) or not Rfc3339._pattern.fullmatch(value):
        raise ValidationError("must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z")
    text = value.replace("t", "T").replace(" ", "T").replace("z", "Z").replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    if dot:
        digits = re.match(r"\d+", rest).group(0)  # type: ignore[union-attr]  # Rfc3339 put digits there
        text = f"{main}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise ValidationError("is not a valid timestamp") from None
    except OverflowError:
        raise ValidationError(OUT_OF_RANGE) from None


INDEXED_BYTES = 1500


def indexed_string(max_length: int, **kwargs) -> fields.String:
    """A string stored in an indexed property: Datastore caps those at 1500 UTF-8 bytes."""
    return fields.String(validate=[validate.Length(min=1, max=max_length), fits_index], **kwargs)


def fits_index(value: str) -> None:
    if len(value.encode("utf-8")) > INDEXED_BYTES:
        raise ValidationError(f"may take at most {INDEXED_BYTES} bytes as UTF-8")


def identifier(max_length: int = IDENTIFIER_LENGTH, **kwargs) -> fields.String:
    """A name made of letters, digits and `_ . : -`."""
    return fields.String(
        validate=[
            validate.Length(min=1, max=max_length),
            FullMatch(IDENTIFIER, error="may hold only letters, digits and _ . : -"),
        ],
        **kwargs,
    )


class FullMatch(validate.Regexp):
    """`validate.Regexp` that needs the whole value to match (`re.fullmatch`)."""

    def __call__(self, value):  # a str: the schema types the field
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class _LengthFirst:
    """Runs the field's `validate.Length` before looking at its entries.

    marshmallow validates every entry of a list or object and only then its length,
    so 300,000 bad entries cost 300,000 checks and as many listed problems; refusing
    the length first makes a refusal cost no more than its limit allows.
    """

    validators: list  # a mixin of a marshmallow field, which has both

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (list, dict)):
            for check in self.validators:
                if isinstance(check, validate.Length):
                    check(value)
        # mypy: a mixin, always before a marshmallow field
        return super()._deserialize(value, attr, data, **kwargs)  # type: ignore[misc]


class BoundedList(_LengthFirst, fields.List):
    """A list whose `validate.Length` is checked before its items."""


class BoundedDict(_LengthFirst, fields.Dict):
    """An object whose `validate.Length` is checked before its entries."""


class JsonObject(fields.Dict):
    """A JSON object of bounded size (metadata)."""

    def __init__(
        self, max_keys: int = METADATA_MAX_KEYS, max_bytes: int = METADATA_MAX_BYTES, **kwargs
    ):
        super().__init__(
            keys=fields.String(validate=validate.Length(min=1, max=METADATA_KEY_LENGTH)), **kwargs
        )
        self.max_keys = max_keys
        self.max_bytes = max_bytes

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict) and len(value) > self.max_keys:  # before the keys
            raise ValidationError(f"may hold at most {self.max_keys} keys")
        result = super()._deserialize(value, attr, data, **kwargs)
        if len(json.dumps(result)) > self.max_bytes:
            raise ValidationError(f"may take at most {self.max_bytes} bytes as JSON")
        return result
