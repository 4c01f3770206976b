"""A small shop API: a tracked cart, a login with rotation, checkout under a lock.

On the embedded in-memory store::

    flask --app examples/shop.py run

On Redis, with one variable set::

    RELAY_SESSION_REDIS=redis://localhost:6379/0 flask --app examples/shop.py run

Try it with ``curl`` (``-b``/``-c`` keep the session cookie in a file)::

    curl -b jar -c jar http://127.0.0.1:5000/products
    curl -b jar -c jar -X POST http://127.0.0.1:5000/cart/tea -d quantity=2
    curl -b jar -c jar -X POST http://127.0.0.1:5000/cart/cup
    curl -b jar -c jar -X POST http://127.0.0.1:5000/login -d name=ada
    curl -b jar -c jar -X POST http://127.0.0.1:5000/checkout
    curl -b jar -c jar http://127.0.0.1:5000/orders

What it shows:

- The cart is ``session["cart"][product] = {"quantity": n, ...}``. Adding a
  product changes only ``cart.<product>``, and changing a quantity only
  ``cart.<product>.quantity``, so two tabs that add different products at
  the same time both keep their product.
- Signing in keeps the cart and moves the session to a new id, against
  session fixation.
- Checkout is a read-modify-write of the cart, the credit and the orders, so
  it runs under the session lock: two checkouts sent at once (a double click)
  place one order, and the second finds the cart empty.
"""

from __future__ import annotations

import os
import typing as t
import uuid
from datetime import datetime
from datetime import timezone

from flask import Flask
from flask import abort
from flask import jsonify
from flask import request
from flask import session

from flask_relay_session import RelaySession

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: Prices in cents: money is never a float.
PRODUCTS = {
    "tea": {"name": "Green tea, 100 g", "price": 650},
    "cup": {"name": "Tea cup", "price": 1200},
    "pot": {"name": "Tea pot", "price": 3400},
}

#: What a new customer may spend, in cents.
STARTING_CREDIT = 10_000

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "dev only: change me")
app.config["RELAY_SESSION_REDIS"] = os.environ.get("RELAY_SESSION_REDIS")
app.config["RELAY_SESSION_KEY_PREFIX"] = os.environ.get(
    "RELAY_SESSION_KEY_PREFIX", "sess:"
)
relay = RelaySession(app)


class CheckoutRefused(Exception):
    """Raised inside the locked block: the block's changes are dropped."""


@app.errorhandler(CheckoutRefused)
def checkout_refused(error: CheckoutRefused) -> ResponseReturnValue:
    return jsonify(error="checkout_refused", message=str(error)), 402


def cart_view() -> dict[str, t.Any]:
    cart = session.get("cart", {})
    total = sum(line["quantity"] * line["price"] for line in cart.values())
    return {"items": cart, "total": total}


@app.get("/products")
def products() -> ResponseReturnValue:
    return jsonify(PRODUCTS)


@app.get("/cart")
def show_cart() -> ResponseReturnValue:
    return jsonify(cart_view())


@app.post("/cart/<product>")
def add_to_cart(product: str) -> ResponseReturnValue:
    if product not in PRODUCTS:
        abort(404)
    quantity = request.form.get("quantity", 1, type=int)
    cart = session.setdefault("cart", {})
    if product in cart:
        # Marks only cart.<product>.quantity dirty.
        cart[product]["quantity"] += quantity
    else:
        # Marks only cart.<product> dirty.
        cart[product] = {"quantity": quantity, "price": PRODUCTS[product]["price"]}
    return jsonify(cart_view())


@app.delete("/cart/<product>")
def remove_from_cart(product: str) -> ResponseReturnValue:
    # Deleting cart.<product> is its own change: a concurrent request that
    # adds another product is not undone.
    session.get("cart", {}).pop(product, None)
    return jsonify(cart_view())


@app.post("/login")
def login() -> ResponseReturnValue:
    name = request.form.get("name", "").strip()
    if not name:
        abort(400)
    # A real shop checks a password here.
    session["user"] = name
    session.setdefault("credit", STARTING_CREDIT)
    relay.session.rotate_id(grace_period=0)  # against fixation: no redirect
    return jsonify(user=name, credit=session["credit"], cart=cart_view())


@app.post("/logout")
def logout() -> ResponseReturnValue:
    relay.session.destroy()
    return jsonify(user=None)


@app.post("/checkout")
def checkout() -> ResponseReturnValue:
    if "user" not in session:
        abort(401)
    with relay.session.lock():
        # The lock reloaded the session: this is the cart as it is now, not
        # as it was when the request began.
        view = cart_view()
        if not view["items"]:
            raise CheckoutRefused("the cart is empty")
        session["credit"] -= view["total"]
        if session["credit"] < 0:
            # Leaving the block with an exception drops its changes: the
            # credit above is not saved.
            raise CheckoutRefused(f"not enough credit for {view['total']} cents")
        order = {
            "id": str(uuid.uuid4()),
            "placed_at": datetime.now(timezone.utc).isoformat(),
            "lines": {name: dict(line) for name, line in view["items"].items()},
            "total": view["total"],
        }
        session.setdefault("orders", []).append(order)
        del session["cart"]
    # Saved and unlocked here.
    return jsonify(order=order, credit=session["credit"]), 201


@app.get("/orders")
def orders() -> ResponseReturnValue:
    return jsonify(orders=session.get("orders", []), credit=session.get("credit"))
