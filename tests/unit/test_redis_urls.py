"""One spelling of a Redis URL (infra/redis_url.py), read by three libraries
that spell a unix socket and a Sentinel otherwise: redis-py (the cache),
Celery's kombu (the queue) and `limits` (the rate limiter)."""

import pytest

from infra import redis_url


@pytest.mark.parametrize("url, broker", [
    ("unix:///run/redis.sock?db=1", "redis+socket:///run/redis.sock?virtual_host=1"),
    ("unix:///run/redis.sock", "redis+socket:///run/redis.sock?virtual_host=0"),
    ("unix:///run/redis.sock?password=x&db=3", "redis+socket:///run/redis.sock?virtual_host=3"),
    ("redis://:secret@redis:6379/2", "redis://:secret@redis:6379/2"),
])
def test_kombu_gets_a_socket_as_redis_socket_with_the_db_as_virtual_host(url, broker):
    assert redis_url.for_kombu(url) == (broker, {})


@pytest.mark.parametrize("url, storage", [
    ("unix:///run/redis.sock?db=0", "redis+unix:///run/redis.sock?db=0"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_limits_gets_a_socket_as_redis_unix(url, storage):
    assert redis_url.for_limits(url) == (storage, {})


SENTINELS = "redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2:26379,[::1]:26380/state/1"


def test_a_sentinel_url_names_its_sentinels_service_db_and_password():
    assert redis_url.sentinel_of(SENTINELS) == redis_url.SentinelURL(
        (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)), "state", 1, "p@ss")
    assert redis_url.sentinel_of("redis+sentinel://h:1/cache") == redis_url.SentinelURL((("h", 1),), "cache", 0, None)
    assert redis_url.sentinel_of("redis://h:6379/0") is None


@pytest.mark.parametrize("url", ["redis+sentinel://h/cache", "redis+sentinel://h:1/", "redis+sentinel://h:1/cache/x"])
def test_a_sentinel_url_without_ports_service_or_a_numeric_db_is_refused(url):
    with pytest.raises(ValueError):
        redis_url.sentinel_of(url)


def test_kombu_gets_each_sentinel_and_the_service_as_master_name():
    broker, options = redis_url.for_kombu(SENTINELS)
    assert broker == ("sentinel://:p%40ss@10.0.0.1:26379/1;sentinel://:p%40ss@10.0.0.2:26379/1;"
                      "sentinel://:p%40ss@[::1]:26380/1")
    assert options == {"master_name": "state", "sentinel_kwargs": {"password": "p@ss"}}


def test_limits_gets_the_service_alone_in_the_path_and_the_db_as_an_option():
    assert redis_url.for_limits(SENTINELS) == (
        "redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2:26379,[::1]:26380/state", {"db": 1})
