"""One spelling of a Redis for every client of the project: the cache (L2),
the relay, the rate limiter (limits) and Celery (kombu). Each library spells
some of these differently; this module translates.

    redis://[:password@]host:port/db
    unix:///path/to/redis.sock?db=N
    redis+sentinel://[:password@]host:port[,host:port...]/service[/db]

The last names the Sentinels that watch a primary and its replicas: clients
ask them where the primary is, and again after a failover. The password, if
any, is both the Sentinels' and the Redis servers' (limits' own convention).
"""

from dataclasses import dataclass
from urllib.parse import quote, unquote

import redis
import redis.sentinel

SENTINEL_SCHEME = "redis+sentinel://"


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple  # ((host, port), ...)
    service: str
    db: int
    password: str | None


def sentinel_of(url):
    """The parts of a ``redis+sentinel://`` URL, or None for any other URL."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    rest = url[len(SENTINEL_SCHEME):]
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2]) or None
    sentinels = []
    for location in netloc.split(","):
        host, _, port = location.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a sentinel is host:port, not {location!r}")
        sentinels.append((host.strip("[]"), int(port)))
    service, _, db = path.strip("/").partition("/")
    if not service or (db and not db.isdigit()):
        raise ValueError(f"{SENTINEL_SCHEME} URLs end in /service[/db], not /{path}")
    return SentinelURL(tuple(sentinels), service, int(db or 0), password)


def connect(url, single_connection_client=False, **kwargs):
    """A redis-py client of the primary ``url`` names; ``kwargs`` are its connections'.

    Over Sentinel, the primary is looked up when the client connects: a client
    whose connection failed must be replaced (as cache/l2.py does) to find a
    new primary, since a reconnect of the same client may not look again
    (redis/redis-py#3874)."""
    parts = sentinel_of(url)
    if parts is None:
        return redis.Redis.from_url(url, single_connection_client=single_connection_client, **kwargs)
    # The sentinels are asked as the primary is: within the same timeouts and
    # retries (none, for L2): redis-py's default retries each sentinel with a
    # backoff of seconds, which a host cut off from every sentinel would pay
    # on a read before serving it from PostgreSQL.
    timeouts = {key: kwargs[key] for key in ("socket_timeout", "socket_connect_timeout", "retry") if key in kwargs}
    sentinel = redis.sentinel.Sentinel(parts.sentinels, sentinel_kwargs={"password": parts.password, **timeouts})
    pool = redis.sentinel.SentinelConnectionPool(parts.service, sentinel, is_master=True, db=parts.db,
                                                 password=parts.password, **kwargs)
    return redis.Redis(connection_pool=pool, single_connection_client=single_connection_client)


def for_kombu(url):
    """(broker URL, transport options) in kombu's spelling."""
    if url.startswith("unix://"):
        # kombu spells a unix-socket Redis redis+socket:// with the db as virtual_host.
        path, _, query = url[len("unix://"):].partition("?")
        db = dict(part.split("=", 1) for part in query.split("&") if "=" in part).get("db", "0")
        return f"redis+socket://{path}?virtual_host={db}", {}
    parts = sentinel_of(url)
    if parts is None:
        return url, {}
    broker = ";".join(f"sentinel://{_auth(parts)}{_location(host, port)}/{parts.db}" for host, port in parts.sentinels)
    return broker, {"master_name": parts.service, "sentinel_kwargs": {"password": parts.password}}


def for_limits(url):
    """(storage URI, extra storage options) in the limits library's spelling."""
    if url.startswith("unix://"):
        return "redis+" + url, {}
    parts = sentinel_of(url)
    if parts is None:
        return url, {}
    # limits reads the whole path as the service name: the db goes as an option.
    return f"{SENTINEL_SCHEME}{_auth(parts)}{_locations(parts)}/{parts.service}", {"db": parts.db}


def _auth(parts):
    return f":{quote(parts.password, safe='')}@" if parts.password else ""


def _locations(parts):
    return ",".join(_location(host, port) for host, port in parts.sentinels)


def _location(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
