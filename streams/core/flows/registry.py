"""Every flow the engine runs, listed explicitly (adding a flow = one line here).

The order is the order in which flows see an event; when two timers are due at the same moment the
lower ``priority`` fires first (registry order breaks a tie of equal priorities).
"""

from __future__ import annotations

from streams.core.flows.abandoned_cart import AbandonedCart
from streams.core.flows.back_in_stock import BackInStock
from streams.core.flows.base import Flow
from streams.core.flows.browse_abandonment import BrowseAbandonment
from streams.core.flows.delivery_feedback import DeliveryFeedback
from streams.core.flows.price_drop import PriceDrop
from streams.core.flows.sunset import Sunset
from streams.core.flows.transactional import OrderConfirmation, ShippingConfirmation, TrackingUpdate
from streams.core.flows.win_back import WinBack

FLOWS: tuple[type[Flow], ...] = (
    OrderConfirmation,
    ShippingConfirmation,
    TrackingUpdate,
    AbandonedCart,
    DeliveryFeedback,
    WinBack,
    BackInStock,
    BrowseAbandonment,
    PriceDrop,
    Sunset,
)


def flow_names() -> list[str]:
    return [f.name for f in FLOWS]
