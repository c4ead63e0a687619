"""How the app speaks HTTP, whatever the route: compact JSON, no cookie
sessions, no automatic OPTIONS, one trusted proxy, and a request body always
read to its end."""

from flask.sessions import SessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

# nginx refuses bodies over 256 KiB (client_max_body_size), the largest an
# operation takes (an order); the app keeps the same limit for anything that
# reaches it another way, and each operation its own (infra/errors.py,
# MAX_BODY_BYTES).
MAX_CONTENT_LENGTH = 256 * 1024


class NoSessions(SessionInterface):
    """The API keeps no cookie sessions. Flask's default interface would still
    build a signing serializer on every request."""

    def open_session(self, app, request):
        return None  # Flask then uses its NullSession

    def save_session(self, app, session, response):
        pass


class ReadWhatIsLeftOfTheBody:
    """Reads the part of a body the app left unread (a refused request's, say),
    up to MAX_CONTENT_LENGTH. gunicorn drains at most 64 KiB of it to keep
    the connection; past that it closes it, and nginx, still sending the
    body, answers 502 instead of the app's answer."""

    def __init__(self, wsgi_app, most):
        self.wsgi_app, self.most = wsgi_app, most

    def __call__(self, environ, start_response):
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            if environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING"):
                body, left = environ["wsgi.input"], self.most
                while left > 0 and (chunk := body.read(min(left, 65536))):
                    left -= len(chunk)


def init_app(app):
    # OPTIONS is answered like any method a resource does not take: a JSON 405
    # whose Allow header lists what it does. Flask's own answer is an empty
    # text/html page.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # Compact bodies with fields in schema order: {"id":4,"message":"Created"}.
    app.json.compact = True
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    app.session_interface = NoSessions()
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH


def wrap_outermost(app):
    """The outer WSGI layers, after every other: everything inside sees the
    client nginx reported (nginx is the one trusted hop: it sets
    X-Forwarded-For to the peer address), and, outermost, whoever answered,
    the rest of the body is read."""
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=0)
    app.wsgi_app = ReadWhatIsLeftOfTheBody(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
