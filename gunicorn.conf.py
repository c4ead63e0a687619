"""gunicorn settings, from the environment through infra/settings.py.

    gunicorn -c gunicorn.conf.py 'app:create_app()'
"""

import sys

from gunicorn import util

from infra import settings

_web = settings.web_settings()


def _forget_app_modules():
    """The master must not keep the app's own modules: workers import them
    fresh, so a graceful reload (HUP) runs the current code and settings."""
    for name in [name for name in sys.modules if name == "infra" or name.startswith("infra.")]:
        del sys.modules[name]


_forget_app_modules()

bind = _web["bind"]
workers = _web["workers"]
# Threads let one worker overlap waits on PostgreSQL and Redis; the pool has
# one connection per thread (DB_POOL_SIZE, infra/settings.py).
worker_class = "gthread"
threads = _web["threads"]
keepalive = _web["keepalive"]
timeout = _web["timeout"]
graceful_timeout = 20
# The app logs one JSON line per request itself; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
# Workers import the app after fork, so no connection is ever shared between processes.
preload_app = False
# No control socket: one shared path in $HOME would make stacks collide.
control_socket_disable = True
# The scheme comes from nginx's X-Forwarded-Proto alone. gunicorn's default
# also reads X-Forwarded-Ssl and X-Forwarded-Protocol, which a client may
# send: they would contradict nginx's header and make gunicorn refuse the
# request.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}


def _json_error(sock, status_int, reason, mesg):
    """What gunicorn answers itself (a request line, header or header count
    past its limits) in the API's JSON error shape instead of an HTML page."""
    # Imported here, in the worker that answers: the master keeps no app module.
    from infra.errors import error_body  # noqa: PLC0415

    body = error_body(status_int, str(mesg)[:200]).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin1")
    util.write_nonblock(sock, head + body)


util.write_error = _json_error  # the one writer of gunicorn's error pages (gunicorn/workers/base.py)


def when_ready(server):
    """The app's metrics, summed over its workers, served by the master (infra/metrics_server.py)."""
    from infra import metrics_server  # noqa: PLC0415

    metrics_server.serve("app_bind")
    _forget_app_modules()


def post_fork(server, worker):
    # A thread back from a Redis or PostgreSQL call waits for the GIL until the
    # running thread yields it: 5 ms by default, longer than a whole cached
    # request (make bench measured the difference: docs/performance.md).
    sys.setswitchinterval(0.0005)
