"""Field types and patterns the schemas share."""

from datetime import UTC

from marshmallow import RAISE, Schema, ValidationError, fields, validate
from marshmallow.validate import Length

from ..months import iso_utc

# Anchored with ^...$ for the OpenAPI document (ECMA regex); FullMatch makes "$" strict in Python too.
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
CLIENT_ID_ERROR = "Must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'."
# Every pattern runs in time linear in its input, and only on input within its field's length:
# each way of matching is the only one (no two quantifiers can take the same characters).
NO_NUL = r"^[^\x00]*$"
# Not blank: white space, then a character other than NUL and ASCII white space, then no NUL.
NOT_BLANK = r"^[ \t\n\r\f\v]*[^\x00 \t\n\r\f\v][^\x00]*$"
REASON_MAX = 500
# A usage month, YYYY-MM (years 1000 to 9999: four digits, so months compare as strings).
MONTH_PATTERN = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"
# Row ids are 64-bit on both databases; a larger one could not even be compared on SQLite.
MAX_ID = 2**63 - 1


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class StrictInteger(fields.Integer):
    """A JSON integer and nothing else: no floats (not even 100.0), booleans or numeric strings."""

    default_error_messages = {"invalid": "Must be an integer."}

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """A JSON true or false and nothing else: not 0, 1, "yes" or "false"."""

    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class FullMatch(validate.Regexp):
    """Regexp over the whole string: a trailing newline does not slip past "$"."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self.error.format(input=value, regex=self.regex.pattern))
        return value


class Text(fields.String):
    """A string of bounded length both databases can store: PostgreSQL refuses NUL and unpaired
    surrogates.

    The length is checked first, before any pattern sees the text. `pattern` (matched whole,
    and stated in the OpenAPI document) refuses NUL; unpaired surrogates cannot be stated
    there and are refused on their own.
    """

    default_error_messages = {"surrogate": "Must not contain unpaired surrogates."}

    def __init__(self, *, max_length: int, min_length: int = 0, pattern=NO_NUL,
                 pattern_error="Must not contain NUL characters.", validate=(), **kwargs):
        self.length = Length(min=min_length or None, max=max_length)
        extra = [validate] if callable(validate) else list(validate)
        super().__init__(validate=[self.length, FullMatch(pattern, error=pattern_error), *extra], **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        self.length(text)  # raises before the validators run the pattern over an overlong text
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            raise self.make_error("surrogate")
        return text


class Instant(fields.AwareDateTime):
    """An instant: read as ISO 8601 with its offset, turned to UTC; written as iso_utc writes it.

    One without an offset is refused: in an investigation, guessing the time zone would
    quietly select the wrong entries."""

    default_error_messages = {
        "invalid": "Not a valid ISO 8601 instant: give a date, a time and an offset, e.g. 2026-11-25T12:00:00Z.",
        "invalid_awareness": "Give the offset (Z or +hh:mm): an instant without one is ambiguous.",
        "range": "Must be an instant between the years 1 and 9999 in UTC.",
    }

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("range") from None

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else iso_utc(value)


def client_id_field(**kwargs) -> Text:
    return Text(max_length=64, pattern=CLIENT_ID_PATTERN, pattern_error=CLIENT_ID_ERROR, **kwargs)


def reason_field() -> Text:
    return Text(max_length=REASON_MAX, metadata={"description": "Why, for the audit log."})


def month_field(data_key: str, description: str) -> Text:
    return Text(max_length=7, data_key=data_key, pattern=MONTH_PATTERN, pattern_error="Must be a month as YYYY-MM.",
                metadata={"description": description})
