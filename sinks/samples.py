"""Sample email contexts: every flow and step, as the engine emits them (``full``: with every optional field
the schemas allow; ``minimal``: only what the engine always sends). Used by ``shopmail preview`` and tests."""

from __future__ import annotations

import json
from typing import Any

MARKETING = ("abandoned_cart", "delivery_feedback", "win_back", "back_in_stock", "browse_abandonment", "price_drop")
SHOP = "https://shop.example.com"
CREATED = 1_765_972_800_000  # 2025-12-17T12:00:00Z: the command's event time (coupons expire 14 days later)

ITEMS = [
    {"sku": "JKT-1", "name": "Waxed cotton jacket", "price": "149.00", "quantity": 1, "stock": 2,
     "image_url": "https://shop.example.com/i/jacket.jpg", "url": "https://shop.example.com/p/jacket"},
    {"sku": "SCK-3", "name": "Merino socks, 3 pairs", "price": "24.50", "quantity": 2, "stock": 40,
     "image_url": "https://shop.example.com/i/socks.jpg", "url": "https://shop.example.com/p/socks"},
]
CART = {"cart_id": "k-1", "cart_url": f"{SHOP}/cart/k-1", "items": ITEMS, "cart_total": "198.00", "currency": "EUR"}
SHIPMENT = {"order_id": "c0000044-o1", "order_number": "#1042", "shipment_id": "s-1", "carrier": "DHL",
            "tracking_number": "JD0148 2201 77", "tracking_url": "https://track.example.com/JD0148220177"}

FULL: dict[tuple[str, int], dict[str, Any]] = {
    ("abandoned_cart", 1): CART,
    ("abandoned_cart", 2): CART,
    ("abandoned_cart", 3): {**CART, "incentive": "coupon", "coupon_code": "CART-7QK2-M9", "coupon_percent": 10,
                            "timezone": "Europe/Berlin"},
    ("order_confirmation", 1): {
        "order_id": "c0000044-o1", "order_number": "#1042", "items": ITEMS, "subtotal": "198.00", "shipping": "4.90",
        "tax": "32.40", "total": "202.90", "currency": "EUR", "order_url": f"{SHOP}/account/orders/1042",
        "shipping_address": ["Ada Lovelace", "12 Example Road", "10115 Berlin", "Germany"],
        "cross_sell": [{"sku": "CAP", "name": "Wool cap", "price": "29.00", "currency": "EUR",
                        "image_url": "https://shop.example.com/i/cap.jpg",
                        "url": f"{SHOP}/p/cap"}]},
    ("shipping_confirmation", 1): {**SHIPMENT, "status": "label_created"},
    ("tracking_update", 1): {**SHIPMENT, "status": "out_for_delivery"},
    ("delivery_feedback", 1): {"order_id": "c0000044-o1", "order_number": "#1042",
                               "coupon_code": "THANKS-4K7P",
                               "coupon_percent": 10, "timezone": "Europe/Berlin",
                               "products": [{"sku": "JKT-1", "name": "Waxed cotton jacket",
                                             "image_url": "https://shop.example.com/i/jacket.jpg"},
                                            {"sku": "SCK-3", "name": "Merino socks, 3 pairs"}]},
    ("win_back", 1): {"segment": "vip", "offer_percent": 25, "coupon_code": "BACK-88XZ", "timezone": "Europe/Berlin"},
    ("win_back", 2): {"segment": "vip", "offer_percent": 25, "currency": "EUR", "new_arrivals": [
        {"sku": "BAG-2", "name": "Canvas weekender bag", "price": "119.00", "currency": "EUR",
         "url": f"{SHOP}/p/weekender", "image_url": "https://shop.example.com/i/weekender.jpg"},
        {"sku": "BLT-1", "name": "Bridle leather belt", "price": "59.00", "currency": "EUR",
         "url": f"{SHOP}/p/belt", "image_url": "https://shop.example.com/i/belt.jpg"}]},
    ("win_back", 3): {"segment": "vip", "offer_percent": 25},
    ("back_in_stock", 1): {"sku": "JKT-1", "items": [{k: v for k, v in ITEMS[0].items() if k != "stock"}],
                           "product_name": "Waxed cotton jacket", "product_url": f"{SHOP}/p/jacket", "currency": "EUR"},
    ("browse_abandonment", 1): {
        "items": [{k: v for k, v in it.items() if k not in ("stock", "quantity")} for it in ITEMS],
        "product_name": "Waxed cotton jacket", "product_url": f"{SHOP}/p/jacket", "currency": "EUR",
        "cross_sell": [{"sku": "CAP", "name": "Wool cap", "price": "29.00", "currency": "EUR",
                        "image_url": "https://shop.example.com/i/cap.jpg",
                        "url": f"{SHOP}/p/cap"}]},
    ("price_drop", 1): {"sku": "JKT-1", "items": [{"sku": "JKT-1", "name": "Waxed cotton jacket", "price": "119.00",
                                                   "image_url": "https://shop.example.com/i/jacket.jpg",
                                                   "url": f"{SHOP}/p/jacket"}],
                        "product_name": "Waxed cotton jacket", "product_url": f"{SHOP}/p/jacket", "currency": "EUR",
                        "price": "119.00", "previous_price": "149.00"},
}

MINIMAL: dict[tuple[str, int], dict[str, Any]] = {
    ("abandoned_cart", 1): {"cart_id": "k-1", "items": [{"sku": "S", "name": "Plain tee", "price": "20.00",
                                                         "quantity": 1}], "cart_total": "20.00", "currency": "EUR"},
    ("order_confirmation", 1): {"order_id": "o-1", "items": [{"sku": "S", "name": "Plain tee", "price": "20.00",
                                                              "quantity": 1}], "total": "20.00"},
    ("shipping_confirmation", 1): {"order_id": "o-1", "shipment_id": "s", "status": "label_created"},
    ("tracking_update", 1): {"order_id": "o-1", "shipment_id": "s", "status": "in_transit"},
    ("delivery_feedback", 1): {"order_id": "o-1"},
    ("win_back", 1): {"segment": "one_time", "offer_percent": 10},
    ("back_in_stock", 1): {"sku": "S", "items": [{"sku": "S", "name": "Plain tee", "price": "20.00", "quantity": 1}],
                           "product_name": "Plain tee", "product_url": f"{SHOP}/cart", "currency": "USD"},
    ("browse_abandonment", 1): {"items": [{"sku": "S", "name": "Plain tee", "price": "20.00", "image_url": None,
                                           "url": None}], "product_name": "Plain tee", "product_url": SHOP,
                                "currency": "USD"},
    ("price_drop", 1): {"sku": "S", "items": [{"sku": "S", "name": "Plain tee", "price": "15.00", "image_url": None,
                                               "url": None}], "product_name": "Plain tee", "product_url": SHOP,
                        "currency": "USD", "price": "15.00", "previous_price": "20.00"},
}
MINIMAL[("abandoned_cart", 2)] = MINIMAL[("abandoned_cart", 3)] = MINIMAL[("abandoned_cart", 1)]
MINIMAL[("win_back", 2)] = MINIMAL[("win_back", 3)] = MINIMAL[("win_back", 1)]


def command(flow: str, step: int, context: dict[str, Any], locale: str = "en", variant: str = "control",
            first_name: str | None = "Ada", command_id: str = "3f9a1c0e7b2d4e6f8a1b2c3d4e5f6a7b",
            customer_id: str = "c0000044") -> dict[str, Any]:
    """An EmailCommand as the engine builds it (context JSON with shop_url, locale, first_name)."""
    ctx = {"first_name": first_name, "shop_url": SHOP, "locale": locale, **context}
    return {"command_id": command_id, "customer_id": customer_id, "to": "ada@example.com", "flow": flow,
            "step": step, "template": f"{flow}/step{step}", "locale": locale, "variant": variant,
            "category": "marketing" if flow in MARKETING else "transactional", "send_at": 0, "expires_at": 0,
            "context": json.dumps(ctx), "trigger_event_id": "e-1", "created_at": CREATED}
