"""The OpenAPI document comes from the same marshmallow schemas that validate requests.

Two rules the schemas enforce beyond their fields are stated here from the schemas' own
declarations: ONE_OF (a body validated by one of several schemas) and AT_LEAST_ONE_OF
(fields of which one must be present).
"""

from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from apispec.ext.marshmallow.common import resolve_schema_cls


class SchemaConverter(OpenAPIConverter):
    def schema2jsonschema(self, schema):
        schema_cls = resolve_schema_cls(schema)
        one_of = getattr(schema_cls, "ONE_OF", None)
        if one_of:
            return {"oneOf": [self.resolve_nested_schema(choice) for choice in one_of.values()]}
        jsonschema = super().schema2jsonschema(schema)
        required_one = getattr(schema_cls, "AT_LEAST_ONE_OF", None)
        if required_one:
            declared = schema_cls._declared_fields
            jsonschema["anyOf"] = [{"required": [declared[name].data_key or name]} for name in required_one]
        return jsonschema


class SchemaPlugin(MarshmallowPlugin):
    Converter = SchemaConverter
