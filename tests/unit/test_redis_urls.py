"""One REDIS_URL spelling, read by two libraries that spell a unix socket
otherwise: Celery's kombu (infra/tasks.py) and the limiter's `limits` (infra/security.py)."""

import pytest

from infra.security import _limits_storage_url
from infra.tasks import _broker_url


@pytest.mark.parametrize("url, broker", [
    ("unix:///run/redis.sock?db=1", "redis+socket:///run/redis.sock?virtual_host=1"),
    ("unix:///run/redis.sock", "redis+socket:///run/redis.sock?virtual_host=0"),
    ("unix:///run/redis.sock?password=x&db=3", "redis+socket:///run/redis.sock?virtual_host=3"),
    ("redis://:secret@redis:6379/2", "redis://:secret@redis:6379/2"),
])
def test_kombu_gets_a_socket_as_redis_socket_with_the_db_as_virtual_host(url, broker):
    assert _broker_url(url) == broker


@pytest.mark.parametrize("url, storage", [
    ("unix:///run/redis.sock?db=0", "redis+unix:///run/redis.sock?db=0"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_limits_gets_a_socket_as_redis_unix(url, storage):
    assert _limits_storage_url(url) == storage
