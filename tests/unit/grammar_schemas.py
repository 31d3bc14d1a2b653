"""JSON schemas for tests/unit/test_grammar.py: pydantic models (as `model_json_schema()` and
as the OpenAI SDK's strict form), OpenAI documentation examples, and one of each feature."""

from __future__ import annotations

import datetime
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from openai import pydantic_function_tool
from pydantic import BaseModel, Field, HttpUrl

# ----------------------------------------------------------------------------------


class Colour(StrEnum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str
    zip_code: str | None = None


class Person(BaseModel):
    name: Annotated[str, Field(min_length=2, max_length=20)]
    age: Annotated[int, Field(ge=0, le=130)]
    score: Annotated[float, Field(ge=0, le=1)]
    kind: Literal["customer", "staff"]
    colour: Colour
    born: datetime.date
    seen: datetime.datetime
    id: uuid.UUID
    home: HttpUrl
    addresses: list[Address]
    tags: dict[str, int]
    pair: tuple[int, str]
    nickname: str | None = None


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Cat | Dog = Field(discriminator="pet_type")


MATH = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                "required": ["explanation", "output"],
                "additionalProperties": False,
            },
        },
        "final_answer": {"type": "string"},
    },
    "required": ["steps", "final_answer"],
    "additionalProperties": False,
}
UI = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["div", "button", "header", "section", "field"]},
        "label": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#"}},
        "attributes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name", "value"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["type", "label", "children", "attributes"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"},
        "units": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit", None]},
    },
    "required": ["location", "units"],
    "additionalProperties": False,
}
LINKED_LIST = {
    "type": "object",
    "properties": {"linked_list": {"$ref": "#/$defs/node"}},
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            },
            "required": ["value", "next"],
            "additionalProperties": False,
        }
    },
    "required": ["linked_list"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, Any] = {
    "pydantic_person": Person.model_json_schema(),
    "pydantic_tree": Tree.model_json_schema(),
    "pydantic_discriminated": Owner.model_json_schema(),
    "openai_strict_person": pydantic_function_tool(Person)["function"]["parameters"],
    "openai_math": MATH,
    "openai_ui_recursive": UI,
    "openai_weather": WEATHER,
    "openai_linked_list": LINKED_LIST,
    "empty": {},
    "true": True,
    "enum_mixed": {"enum": ["a", 1, 2.5, None, True, {"x": [1]}, 'say "hi"', "é\n😀\\"]},
    "const": {"const": "fixed"},
    "nested_arrays": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        "maxItems": 3,
    },
    "any_of": {
        "anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}, {"type": "null"}]
    },
    "one_of_types": {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "boolean"}}]
    },
    "formats": {
        "type": "object",
        "properties": {
            f: {"type": "string", "format": f}
            for f in ("date", "time", "date-time", "uuid", "ipv4", "hostname", "email", "uri")
        },
        "required": ["date", "time", "date-time", "uuid", "ipv4", "hostname", "email", "uri"],
    },
    "unknown_format_is_annotation": {"type": "string", "format": "binary"},
    "lengths": {"type": "string", "minLength": 2, "maxLength": 5},
    "items_bounds": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
    "min_items_only": {"type": "array", "minItems": 1},
    "tuple_closed": {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"enum": ["x", "y"]}],
        "items": False,
    },
    "int_bounds": {"type": "integer", "minimum": -17, "maximum": 12345},
    "int_exclusive": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
    "int_min_only": {"type": "integer", "minimum": 10},
    "int_max_only": {"type": "integer", "maximum": -3},
    "int_draft4": {"type": "integer", "minimum": 5, "exclusiveMinimum": True},
    "number_bounds": {"type": "number", "minimum": -2.5, "maximum": 2.5},
    "number_exclusive": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
    "number_min_only": {"type": "number", "minimum": -1},
    "multiple_of_one": {"type": "number", "multipleOf": 1},
    "patterns": {
        "type": "object",
        "properties": {
            "phone": {"type": "string", "pattern": "^\\d{3}-\\d{4}$"},
            "slug": {"type": "string", "pattern": "^[a-z]+(_[a-z]+)*$"},
            "url": {"type": "string", "pattern": '^(?:https?)://[^\\s"]+$'},
            "contains": {"type": "string", "pattern": "foo|bar"},
            "quoted": {"type": "string", "pattern": '^"[^"\\\\]{1,3}"\\\\$'},
        },
        "required": ["phone", "slug", "url", "contains", "quoted"],
    },
    "map": {"type": "object", "additionalProperties": {"type": "boolean"}},
    "closed_empty": {"type": "object", "additionalProperties": False},
    "all_of_one": {"allOf": [{"$ref": "#/definitions/A"}], "definitions": {"A": {"type": "null"}}},
    "odd_keys": {
        "type": "object",
        "properties": {k: {"type": "integer"} for k in ("a b", "é", 'quo"te', "new\nline")},
        "required": ["a b", 'quo"te'],
    },
    "type_list": {"type": ["integer", "string", "null"], "minLength": 1, "minimum": 3},
    "implied_object": {"properties": {"x": {"type": "boolean"}}, "required": ["x"]},
}
