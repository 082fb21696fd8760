"""The logical topics and the value each carries: a module of names only, so every Kafka helper (the
admin code in :mod:`streams.kafka.topics`, the producers in :mod:`streams.kafka.io`) can use it
without importing the other."""

INPUT_TOPICS = ("carts", "orders", "shipments", "customers", "feedback", "clock", "product_views")  # keyed by customer (or partition)
# input topics not keyed by customer (a global table): every worker reads all of their partitions and
# feeds every record to every partition task it runs (streams/core/engine.py GLOBAL_TOPICS)
GLOBAL_INPUT_TOPICS = ("inventory",)
# value schema per logical topic (the DLQ value is always DeadLetter)
VALUE_SCHEMA = {
    "carts": "CartEvent", "orders": "OrderEvent", "shipments": "ShipmentEvent",
    "customers": "CustomerEvent", "feedback": "EmailFeedback", "clock": "ClockTick", "inventory": "InventoryEvent",
    "product_views": "ProductViewed",
    "commands": "EmailCommand", "outcomes": "EmailOutcome", "sink_ledger": "SinkLedgerEntry",
    "coupons": "CouponIssued", "audiences": "AudienceMembership",
}
# faust tables of the processor app; their changelog topics are provisioned here too so that
# deploy/ (Strimzi) and `shopmail topics` agree on them.
PROCESSOR_TABLES = ("state",)  # one compacted changelog: key customer_id (or "\\x00…" partition keys)
