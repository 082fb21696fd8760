"""The serving copy of the views: every replica reads all of the compacted view topic into a
ViewStore — first to the end each fetch reports (then the replica is ready), then it follows new
writes, so any replica answers for any order within one fetch of the builder's write."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.config import Settings
from streams.kafka.io import consumer_config
from streams.kafka.log_reader import EOF_CONFIG, read_to_end
from streams.tracking import view as views
from streams.tracking.builder import SKIPPED

log = logging.getLogger("shopmail.tracking.follower")


class ViewFollower:
    def __init__(self, settings: Settings, bootstrap: str, store: views.ViewStore) -> None:
        self.settings = settings
        self.topic = settings.tracking.view_topic_name(settings.topics.prefix)
        self.store = store
        self.consumer = Consumer(consumer_config(settings, bootstrap, settings.tracking.group_id + "-follower",
                                                 **EOF_CONFIG))

    def apply(self, m: Message) -> None:
        key = (m.key() or b"").decode()
        if m.value() is None:
            self.store.delete(key)
            return
        try:
            self.store.put(views.decode(m.value()))
        except ValueError as exc:
            SKIPPED.labels("bad_view").inc()
            log.warning("unreadable tracking view %s@%d: %s", key, m.offset(), exc)

    def run(self, stop: threading.Event) -> None:
        try:
            md = self.consumer.list_topics(self.topic, timeout=10)
            meta = md.topics.get(self.topic)
            if meta is None or meta.error is not None:
                raise RuntimeError(f"view topic {self.topic} is missing (run `shopmail topics`)")
            parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
            read_to_end(self.consumer, parts, self.apply, self.settings.tracking.restore_timeout_s, "tracking views")
            log.info("tracking views restored: %d orders", len(self.store))
            self.store.ready.set()
            while not stop.is_set():
                for m in self.consumer.consume(1000, 0.1):
                    err = m.error()
                    if err is None:
                        self.apply(m)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
        finally:
            self.consumer.close()
