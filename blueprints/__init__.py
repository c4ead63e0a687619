"""One blueprint per domain; the shared pieces every domain blueprint uses."""

import flask_smorest
from flask_smorest.error_handler import ErrorSchema
from werkzeug.http import HTTP_STATUS_CODES

from errors import JSONBodyParser

# Route converter for ids stored as PostgreSQL BIGINT: anything larger is a 404.
BIGINT_ID = "int(max=9223372036854775807)"


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, answering 415 when a JSON body is not JSON."""

    ARGUMENTS_PARSER = JSONBodyParser()

    def errors(self, *codes):
        """Document the error responses a view can give, in the API's error shape."""

        def decorator(view):
            for code in codes:
                view = self.alt_response(
                    code, schema=ErrorSchema, description=HTTP_STATUS_CODES[code]
                )(view)
            return view

        return decorator
