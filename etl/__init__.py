"""Self-hosted stream ETL on Faust: transforms between Kafka topics, sinks and sources."""

__version__ = "0.1.0"
