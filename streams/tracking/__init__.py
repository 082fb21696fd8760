"""The branded tracking page and carrier webhook ingest (``shopmail tracking``).

Modules: ``tokens`` (signed page tokens and the page URL), ``view`` (the per-order view and its
store), ``builder`` (shop.orders / shop.shipments / email.commands → compacted view topic),
``page`` (jinja2 + Babel rendering), ``webhooks`` (carrier payloads → ShipmentEvent fields),
``ingest`` (verified webhooks → shop.shipments), ``server`` (HTTP), ``cli`` (the command).
Only ``tokens`` is imported outside this package (the sink signs the page link at render time).
"""
