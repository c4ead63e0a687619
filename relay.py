"""The cache relay process: applies every committed change of a cached table
to both cache levels (the loop: cache/relay.py).

    python relay.py           run it (make up and docker compose start it; --pidfile PATH)
    python relay.py --check   exit 0 if a relay holds the lock and keeps up (healthcheck)
"""

import argparse
import os
import signal
import sys

from app import create_app
from cache.relay import Relay, check
from infra import metrics_server


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 0 if a relay runs and keeps up")
    parser.add_argument("--pidfile", help="write the process id here")
    args = parser.parse_args()
    if args.pidfile:
        with open(args.pidfile, "w") as pidfile:
            pidfile.write(f"{os.getpid()}\n")
    app = create_app()
    if args.check:
        return 0 if check(app) else 1
    metrics_server.serve("relay_bind")
    relay = Relay(app)
    signal.signal(signal.SIGTERM, relay.stop_on_signal)
    signal.signal(signal.SIGINT, relay.stop_on_signal)
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
