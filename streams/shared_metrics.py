"""Prometheus metrics shared by every shopmail process (registered once per process)."""

from prometheus_client import Counter

DLQ = Counter("shopmail_dlq_records_total", "Records dead-lettered", ["topic"])
