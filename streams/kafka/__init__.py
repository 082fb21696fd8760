"""The Kafka edge: client configuration and I/O, topics, the embedded broker, partitioning."""
