"""The OpenAPI document comes from the same marshmallow schemas that validate requests.

Two rules the schemas enforce beyond their fields are stated here from the schemas' own
declarations: ONE_OF (a body validated by one of several schemas) and AT_LEAST_ONE_OF
(fields of which one must be present), in shapes client generators turn into types.
"""

from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from apispec.ext.marshmallow.common import resolve_schema_cls
from flask_smorest import Api

from . import errors
from .schemas.common import ErrorSchema


class SchemaConverter(OpenAPIConverter):
    def schema2jsonschema(self, schema):
        schema_cls = resolve_schema_cls(schema)
        one_of = getattr(schema_cls, "ONE_OF", None)
        if one_of:
            return {"oneOf": [self.resolve_nested_schema(choice) for choice in one_of.values()]}
        jsonschema = super().schema2jsonschema(schema)
        required_one = getattr(schema_cls, "AT_LEAST_ONE_OF", None)
        if not required_one:
            return jsonschema
        # One complete object per field that may carry the change, each requiring it: client
        # generators (openapi-python-client) type that as a union of models, where an anyOf of
        # bare `required` lists became an untyped Any.
        declared = schema_cls().fields
        names = [declared[name].data_key or name for name in required_one]
        component = schema_cls.__name__.removesuffix("Schema")
        return {
            "description": f"Give at least one of {', '.join(names)}.",
            "anyOf": [
                {"title": f"{component}With{name[0].upper()}{name[1:]}", **jsonschema, "required": [name]}
                for name in names
            ],
        }


class SchemaPlugin(MarshmallowPlugin):
    Converter = SchemaConverter


class CreditsApi(Api):
    """flask-smorest's Api answering errors in the service's one shape, through its documented
    hooks (ERROR_SCHEMA, handle_http_exception), with the schema rules above in its document."""

    ERROR_SCHEMA = ErrorSchema

    def __init__(self, app):
        super().__init__(app, spec_kwargs={"marshmallow_plugin": SchemaPlugin()})
        self.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)
