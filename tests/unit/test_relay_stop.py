"""The relay stops on SIGTERM whatever its main thread was doing (cache/relay.py)."""

import threading

from cache.relay import Relay


def test_the_stop_signal_never_waits_for_the_lock_the_interrupted_wait_holds():
    relay = Relay.__new__(Relay)  # its stopping Event is all the handler touches
    relay.stopping = threading.Event()
    handled = threading.Event()

    def main_thread_interrupted_inside_its_wait():
        # Where a signal can find the main thread in stopping.wait(): holding
        # the Event's lock (a private attribute of CPython's Event).
        with relay.stopping._cond:
            relay.stop_on_signal()
            handled.set()

    threading.Thread(target=main_thread_interrupted_inside_its_wait, daemon=True).start()
    assert handled.wait(5), "the handler waits for a lock its own thread holds: the relay would never stop"
    assert relay.stopping.wait(5)
