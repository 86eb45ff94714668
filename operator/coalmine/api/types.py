"""The field types and base models every resource of coalmine is written with."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    Strict,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from coalmine.api.limits import MAX_WEIGHT

JsonObject = dict[str, Any]
"""A JSON object passed through untouched: the pod template and the API's raw objects."""

FreeForm = dict[str, JsonValue]
"""A JSON object whose shape belongs to a later feature (analysis); stored as written."""


def integral(value: object) -> object:
    # The API server takes 20.0 for an integer field (and stores 20); so do we. Strings and
    # booleans stay refused, as they are there.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, Strict(), BeforeValidator(integral)]
"""An integer as the API server reads one: no "3", no true, but 3.0 is 3."""

# The bounds sit before the converter: placed after it (or on an optional field's Field), pydantic
# cannot put them into the JSON schema as minimum/maximum.
Percent = Annotated[int, Strict(), Field(ge=0, le=MAX_WEIGHT), BeforeValidator(integral)]
"""A traffic weight in percent, 0 to 100."""

IntOrString = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]
"""A port by number or by name; fields of this type check the value in a before-validator, so
an error names the field rather than one branch of the union."""


def plain_json(value: object) -> object:
    # kopf hands over Mapping views, not dicts; strict fields and the revision hash want the
    # JSON types themselves, and a private copy the caller cannot mutate underneath us.
    if isinstance(value, Mapping):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    return value


# --- documented enums ---------------------------------------------------------------------


class DocumentedEnum(StrEnum):
    """A string enum whose members carry their meaning.

    The meaning reaches `help()`, the docs and the CRD description (so `kubectl explain`
    shows it), from one place.
    """

    _value_: str
    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        member.__doc__ = meaning
        return member

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        described = handler.resolve_ref_schema(json_schema)
        values = "\n".join(f"- {member.value}: {member.meaning}" for member in cls)
        described["description"] = f"{(cls.__doc__ or '').strip()}\n\n{values}"
        return json_schema


class SpecModel(BaseModel):
    # Strict scalars (Integer, StrictStr) because the API server does not coerce "3" to 3;
    # frozen because the spec is the user's, and the operator only reads it.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
    )

    def to_dict(self) -> JsonObject:
        """The JSON form, camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(BaseModel):
    # Lenient where the spec is strict: status is written by the operator itself, and an
    # operator rolled back to an older version must still read what a newer one wrote.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def to_dict(self) -> JsonObject:
        """The JSON form, camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
