"""Phone -> address book: one path (ENDPOINT_PREFIX), four methods, cached in both levels.

Numbers are parsed with ``phonenumbers`` and stored in RFC 3966 form
(``tel:+44-7911-123456``), so every spelling of one number is one record.
"""

import marshmallow as ma
import phonenumbers
from flask import request
from flask.views import MethodView
from flask_smorest import abort

from blueprints import Blueprint, TrimmedSchema, printable
from cache.reads import item_response
from infra import db
from infra.responses import to_json

blp = Blueprint("addresses", __name__, description="Phone number to address book")


class PhoneNumber(ma.fields.String):
    """A phone number in international form (+44 7911 123456) or a tel: URI; loads as RFC 3966."""

    def _deserialize(self, value, attr, data, **kwargs):
        raw = super()._deserialize(value, attr, data, **kwargs)
        if len(raw) > 64:
            raise ma.ValidationError("Too long for a phone number.")
        text = raw.strip()
        # An unencoded "+" in a query string arrives as a space: "?phone=+44..."
        if raw.startswith(" ") and text[:1].isdigit():
            text = "+" + text
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            raise ma.ValidationError(
                "Not a phone number: give it in international form (+44 7911 123456) or as tel:+44-7911-123456."
            ) from None
        if not phonenumbers.is_valid_number(number):
            raise ma.ValidationError("Not a valid phone number.")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.RFC3966)


PHONE_DOC = {"description": "international form (+44 7911 123456) or tel: URI", "example": "+447911123456"}


class CustomerAddressSchema(TrimmedSchema):
    phone = PhoneNumber(required=True, metadata=PHONE_DOC)
    address = ma.fields.String(
        required=True,
        validate=[ma.validate.Length(10, 255), printable],
        metadata={"description": "10 to 255 printable characters"},
    )


class PhoneQueryArgsSchema(ma.Schema):
    phone = PhoneNumber(required=True, metadata=PHONE_DOC)


class AddressResultSchema(ma.Schema):
    detail = ma.fields.String()
    customer_addr = ma.fields.Nested(CustomerAddressSchema)


def _load_address(phone):
    row = db.fetch_one(
        """
        SELECT phone, address
        FROM customer_addresses
        WHERE phone = %s
        """,
        (phone,),
    )
    return None if row is None else to_json({"phone": row["phone"], "address": row["address"]})


MISSING = "No address for {}."

ADDRESSES = blp.cached_resource(
    "addresses", table="customer_addresses", load=_load_address, query_item_view=("CustomerAddresses", "phone")
)


@blp.route("")
class CustomerAddresses(MethodView):
    @blp.arguments(PhoneQueryArgsSchema, location="query")
    @blp.response(200, CustomerAddressSchema)
    @blp.errors(404)
    def get(self, args):
        """Get the address of a phone number"""
        return item_response(ADDRESSES, args["phone"], MISSING, request)

    @blp.arguments(CustomerAddressSchema)
    @blp.idempotent()
    @blp.response(201, AddressResultSchema)
    @blp.errors(400, 409, 415)
    def post(self, entry):
        """Add the address of a new phone number"""
        db.write_one(
            """
            INSERT INTO customer_addresses (phone, address)
            VALUES (%s, %s)
            """,
            (entry["phone"], entry["address"]),
        )
        return {"detail": "Created", "customer_addr": entry}

    @blp.arguments(CustomerAddressSchema)
    @blp.response(200, AddressResultSchema)
    @blp.errors(400, 404, 415)
    def put(self, entry):
        """Change the address of a known phone number"""
        found = db.write_one(
            """
            UPDATE customer_addresses
            SET address = %s,
                updated_at = now()
            WHERE phone = %s
            RETURNING phone
            """,
            (entry["address"], entry["phone"]),
        )
        if found is None:
            abort(404, message=MISSING.format(entry["phone"]))
        return {"detail": "Updated", "customer_addr": entry}

    @blp.arguments(PhoneQueryArgsSchema, location="query")
    @blp.response(204)
    @blp.errors(404)
    def delete(self, args):
        """Delete a phone number and its address"""
        phone = args["phone"]
        if db.write_one("DELETE FROM customer_addresses WHERE phone = %s RETURNING phone", (phone,)) is None:
            abort(404, message=MISSING.format(phone))
        return ""
