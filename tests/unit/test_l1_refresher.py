"""The L1 refresher (cache/l1.py) against small HTTP servers standing in for
nginx: every L1 its names resolve to is refreshed, one that joins once it is
looked up, and one that is dead or silent never delays the others."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cache.l1 import REFRESH_HEADER, L1Refresher
from tests.support.bounds import L1_ITEM_BOUND, UNPROMISED_WAIT
from tests.support.waiting import eventually


class FakeL1:
    """An HTTP server that notes each refresh it gets, and when."""

    def __init__(self, host="127.0.0.1"):
        self.got = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                got.append((self.path, self.headers.get(REFRESH_HEADER), time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def silent_listener():
    """A peer that accepts connections and never answers: a host cut off mid-way."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def wait_for(condition):
    return eventually(condition, seconds=UNPROMISED_WAIT)


@pytest.fixture
def l1s():
    made = []
    yield lambda: made.append(FakeL1()) or made[-1]
    for l1 in made:
        l1.close()


def test_every_l1_a_name_resolves_to_is_refreshed_twice(l1s):
    first, second = l1s(), l1s()
    refresher = L1Refresher(["http://l1.test"], "token", resolve=lambda base: {first.url, second.url})
    refresher.start()
    try:
        refresher.add(["/users/1"])
        wait_for(lambda: len(first.got) == 2 and len(second.got) == 2)
    finally:
        refresher.stop()
    for l1 in (first, second):
        assert [(path, token) for path, token, _ in l1.got] == [("/users/1", "token")] * 2
        # AGAIN_AFTER after the first was handed out, a little less after it arrived.
        assert l1.got[1][2] - l1.got[0][2] >= L1Refresher.AGAIN_AFTER * 0.9
    # The second fetch repairs an entry a slow read overwrote: within the item's promise.
    assert L1Refresher.AGAIN_AFTER < L1_ITEM_BOUND


def test_an_l1_that_joins_is_refreshed_once_looked_up_and_one_that_leaves_is_not(l1s):
    old, new = l1s(), l1s()
    named = {old.url}
    refresher = L1Refresher(["http://l1.test"], "token", resolve=lambda base: set(named))
    refresher.start()
    try:
        refresher.add(["/users/1"])
        wait_for(lambda: len(old.got) == 2)
        named = {new.url}  # the deployment changed after the relay started
        time.sleep(L1Refresher.RESOLVE_SECONDS)
        refresher.add(["/users/2"])
        wait_for(lambda: [path for path, *_ in new.got] == ["/users/2", "/users/2"])
    finally:
        refresher.stop()
    assert [path for path, *_ in old.got] == ["/users/1", "/users/1"]


def test_a_silent_l1_never_delays_the_others(l1s):
    live = l1s()
    silent, silent_url = silent_listener()
    refresher = L1Refresher(["http://l1.test"], "token", resolve=lambda base: {silent_url, live.url})
    refresher.start()
    try:
        for item in range(20):
            refresher.add([f"/users/{item}"])
            time.sleep(0.01)
        refresher.add(["/users/last"])
        waited = wait_for(lambda: any(path == "/users/last" for path, *_ in live.got))
    finally:
        refresher.stop()
        silent.close()
    # The promise, although each try on the silent peer waits longer than that.
    assert waited.unmet_for <= L1_ITEM_BOUND, waited


def test_a_name_that_stops_resolving_keeps_what_it_named(l1s):
    l1 = l1s()
    answers = [{l1.url}]

    def resolve(base):
        if not answers:
            raise socket.gaierror("no such name")
        return answers.pop()

    refresher = L1Refresher(["http://l1.test"], "token", resolve=resolve)
    refresher.start()
    try:
        refresher.add(["/users/1"])
        wait_for(lambda: len(l1.got) == 2)
        time.sleep(L1Refresher.RESOLVE_SECONDS)
        refresher.add(["/users/2"])
        wait_for(lambda: [path for path, *_ in l1.got][2:] == ["/users/2", "/users/2"])
    finally:
        refresher.stop()



@pytest.mark.parametrize("base", ["nginx:8081", "http://h:abc", "https://nginx", "http://:80"])
def test_an_l1_address_it_could_not_use_stops_the_start(base):
    with pytest.raises(ValueError, match="L1_REFRESH_URLS"):
        L1Refresher([base], "token")
