"""The worker's periodic sweep (blueprints/orders.py) through a PostgreSQL
outage: one warning when it starts, one line when it ends, no traceback."""

import json

from blueprints.orders import _Outage, sweep_unprocessed


def test_an_outage_is_one_warning_and_its_end_one_line(make_app, capsys):
    _Outage.down = False
    # Nothing listens on port 1: every connection is refused at once.
    down = make_app(DATABASE_URL="postgresql://api@127.0.0.1:1/app", DB_CONNECT_TIMEOUT=1)
    up = make_app()
    capsys.readouterr()
    for _ in range(3):
        with down.app_context():
            assert sweep_unprocessed.run(0) == 0
    with up.app_context():
        sweep_unprocessed.run(10**6)  # orders older than that: none
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lines = [line for line in lines if line["logger"] == "blueprints.orders"]
    assert [(line["level"], line["message"].split(",")[0]) for line in lines] == [
        ("WARNING", "orders sweep: PostgreSQL is unavailable"), ("INFO", "orders sweep: PostgreSQL answers again")]
    assert not any("exception" in line for line in lines)
