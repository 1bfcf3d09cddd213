"""marshmallow schemas, one module per resource: what the API accepts (validated, unknown fields
refused) kept apart from what it returns. fields holds the field types and patterns they share."""
