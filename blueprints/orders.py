"""Orders: each account's own, behind a bearer token; processed by the Celery worker.

An order is cached in L2 by its id, and every answer, cached or not, is
checked against the token's account: one account never reads another's.
Authenticated responses are ``private, no-store`` and never enter L1
(infra/security.py, nginx/cache.conf).
"""

import json
import logging
import uuid
from decimal import Decimal

import marshmallow as ma
from celery import shared_task
import psycopg2
from celery.signals import worker_ready
from flask.views import MethodView
from flask_jwt_extended import jwt_required
from flask_smorest import abort

from blueprints import BEARER_AUTH, BIGINT_ID, PAGINATION_DOC, Blueprint, pagination_header, printable
from cache import l2
from infra import db, tasks
from infra.responses import json_response, to_json
from infra.security import current_account_id, limiter, orders_rate_limit

log = logging.getLogger(__name__)

blp = Blueprint("orders", __name__, url_prefix="/api/orders", description="Orders of the signed-in account")

MAX_MONEY = Decimal("1000000000")
CENT = Decimal("0.01")
STATUSES = ("PENDING", "PAID", "SHIPPED", "CANCELED")
# Where each status may go next; SHIPPED and CANCELED are final.
NEXT_STATUSES = {"PENDING": {"PAID", "CANCELED"}, "PAID": {"SHIPPED", "CANCELED"}, "SHIPPED": set(), "CANCELED": set()}


class Money(ma.fields.Decimal):
    """Loads as an exact Decimal of at most two places; dumps as a JSON number."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        amount = super()._deserialize(value, attr, data, **kwargs)
        if not (0 <= amount <= MAX_MONEY):
            raise ma.ValidationError(f"Must be between 0 and {MAX_MONEY}.")
        if amount != amount.quantize(CENT):
            raise ma.ValidationError("At most two decimal places.")
        return amount

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else float(Decimal(str(value)))


class OrderItemSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=[ma.validate.Length(1, 200), printable])
    quantity = ma.fields.Integer(required=True, strict=True, validate=ma.validate.Range(1, 1_000_000))
    price = Money(required=True, metadata={"description": "per unit, at most two decimal places"})


class OrderCreateSchema(ma.Schema):
    # 100 items of 200-character names: the one body larger than errors.MAX_BODY_BYTES.
    max_body_bytes = 256 * 1024

    items = ma.fields.List(
        ma.fields.Nested(OrderItemSchema), required=True, validate=ma.validate.Length(1, 100)
    )
    total_price = Money(required=True, metadata={"description": "the sum of quantity × price"})

    @ma.validates_schema
    def total_matches_items(self, order, **kwargs):
        expected = _total(order["items"])
        if order["total_price"] != expected:
            raise ma.ValidationError(f"Must equal the sum of quantity × price: {expected}.", "total_price")


class OrderStatusSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))


class OrderSchema(ma.Schema):
    id = ma.fields.String(metadata={"format": "uuid"})
    user_id = ma.fields.Integer()
    items = ma.fields.List(ma.fields.Nested(OrderItemSchema))
    total_price = Money()
    status = ma.fields.String()
    created_at = ma.fields.DateTime()
    processed_at = ma.fields.DateTime(allow_none=True)


class OrderQueryArgsSchema(ma.Schema):
    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1))
    page_size = ma.fields.Integer(load_default=20, validate=ma.validate.Range(1, 100))


_order = OrderSchema()
_orders = OrderSchema(many=True)

SELECT_ORDER = """
    SELECT id, user_id, items, total_price, status, created_at, processed_at
    FROM orders
"""


def _total(items):
    return sum((Decimal(item["quantity"]) * Decimal(str(item["price"])) for item in items), Decimal("0"))


def _order_id(raw):
    """The canonical form of an order id, or 422."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        abort(422, message="Not a valid order id.", errors={"path": {"order_id": ["Not a valid UUID."]}})


def _load_order(order_id):
    row = db.fetch_one(SELECT_ORDER + "WHERE id = %s", (order_id,))
    return None if row is None else to_json(_order.dump(row))


ORDERS = blp.cached_resource("orders", table="orders", load=_load_order, public=False)


def _missing(order_id):
    # The same answer whether the order is missing or another account's.
    return f"Order {order_id} not found."


@blp.route("/")
class Orders(MethodView):
    decorators = [limiter.shared_limit(orders_rate_limit, scope="orders")]

    @jwt_required()
    @blp.arguments(OrderCreateSchema)
    @blp.idempotent(per_account=True)
    @blp.response(201, OrderSchema)
    @blp.errors(400, 401, 415, 429)
    @blp.doc(security=BEARER_AUTH)
    def post(self, order):
        """Place an order; the worker processes it within seconds"""
        items = [{**item, "price": str(item["price"])} for item in order["items"]]
        row = db.write_one(
            """
            INSERT INTO orders (user_id, items, total_price)
            SELECT id, %s, %s
            FROM accounts
            WHERE id = %s
            RETURNING id, user_id, items, total_price, status, created_at, processed_at
            """,
            (json.dumps(items), order["total_price"], current_account_id()),
        )
        if row is None:
            abort(401, message="This token's account no longer exists.")
        db.on_commit(lambda: tasks.send("orders.process", str(row["id"])))
        return json_response(to_json(_order.dump(row)), status=201)


@blp.route("/<order_id>/")
class OrderById(MethodView):
    decorators = [limiter.shared_limit(orders_rate_limit, scope="orders")]

    @jwt_required()
    @blp.response(200, OrderSchema)
    @blp.errors(401, 404, 429)
    @blp.doc(security=BEARER_AUTH)
    def get(self, order_id):
        """Get one of your orders"""
        order_id, account = _order_id(order_id), current_account_id()
        body, l2_status = l2.of_app().item(ORDERS, order_id)
        if body is None or json.loads(body)["user_id"] != account:
            abort(404, message=_missing(order_id))
        return json_response(body, headers={l2.HEADER: l2_status})

    @jwt_required()
    @blp.arguments(OrderStatusSchema)
    @blp.response(200, OrderSchema)
    @blp.errors(400, 401, 404, 409, 415, 429)
    @blp.doc(security=BEARER_AUTH)
    def patch(self, change, order_id):
        """Change the status of one of your orders"""
        order_id, account = _order_id(order_id), current_account_id()
        wanted = change["status"]
        with db.transaction() as cur:
            cur.execute(
                SELECT_ORDER + "WHERE id = %s AND user_id = %s FOR UPDATE", (order_id, account)
            )
            row = cur.fetchone()
            if row is None:
                abort(404, message=_missing(order_id))
            if wanted != row["status"]:
                if wanted not in NEXT_STATUSES[row["status"]]:
                    abort(409, message=f"An order that is {row['status']} cannot become {wanted}.")
                cur.execute("UPDATE orders SET status = %s WHERE id = %s", (wanted, order_id))
                row["status"] = wanted
        return json_response(to_json(_order.dump(row)))


@blp.route(f"/user/<{BIGINT_ID}:user_id>/")
class OrdersOfUser(MethodView):
    decorators = [limiter.shared_limit(orders_rate_limit, scope="orders")]

    @jwt_required()
    @blp.arguments(OrderQueryArgsSchema, location="query")
    @blp.response(200, OrderSchema(many=True), headers=PAGINATION_DOC)
    @blp.errors(401, 403, 429)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args, user_id):
        """List your orders, newest first"""
        if user_id != current_account_id():
            abort(403, message="You can list only your own orders.")
        page, page_size = args["page"], args["page_size"]
        total = db.fetch_one("SELECT count(*) AS total FROM orders WHERE user_id = %s", (user_id,))["total"]
        rows = db.fetch_all(
            SELECT_ORDER
            + """
            WHERE user_id = %s
            ORDER BY created_at DESC, id DESC
            LIMIT %s
            OFFSET %s
            """,
            (user_id, page_size, (page - 1) * page_size),
        )
        return json_response(to_json(_orders.dump(rows)), headers=pagination_header(total, page_size, rows, page, cursors=False))


@shared_task(name="orders.process")
def process_order(order_id):
    """Check an order and mark it processed; a second run of the same order does nothing."""
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT user_id, items, total_price
            FROM orders
            WHERE id = %s
              AND processed_at IS NULL
            FOR UPDATE
            """,
            (order_id,),
        )
        row = cur.fetchone()
        if row is None:
            return "already processed"
        consistent = _total(row["items"]) == row["total_price"]
        cur.execute(
            """
            UPDATE orders
            SET processed_at = now(),
                status = CASE WHEN %s THEN status ELSE 'CANCELED' END
            WHERE id = %s
            """,
            (consistent, order_id),
        )
    return "processed" if consistent else "canceled: total does not match items"


class _Outage:
    """Whether the sweep found PostgreSQL down last time: an outage is expected
    now and then, and deserves one warning when it starts and one line when it
    ends, not a traceback at every sweep."""

    down = False


@shared_task(name="orders.sweep")
def sweep_unprocessed(min_age_seconds=30):
    """Queue again the orders nobody processed: queued while the broker was down, or lost."""
    try:
        rows = _unprocessed(min_age_seconds)
    except (psycopg2.Error, db.PoolTimeout) as error:
        if not db.unavailable(error):
            raise
        if not _Outage.down:
            log.warning("orders sweep: PostgreSQL is unavailable, sweeping again once it answers: %s",
                        " ".join(str(error).split()))
        _Outage.down = True
        return 0
    if _Outage.down:
        log.info("orders sweep: PostgreSQL answers again")
    _Outage.down = False
    for row in rows:
        tasks.send("orders.process", str(row["id"]))
    return len(rows)


def _unprocessed(min_age_seconds):
    return db.fetch_all(
        """
        SELECT id
        FROM orders
        WHERE processed_at IS NULL
          AND created_at < now() - make_interval(secs => %s)
        ORDER BY created_at
        LIMIT 1000
        """,
        (min_age_seconds,),
    )


@worker_ready.connect
def _sweep_at_start(sender, **kwargs):
    sender.app.send_task("orders.sweep", kwargs={"min_age_seconds": 0}, queue=tasks.ORDERS_QUEUE)
