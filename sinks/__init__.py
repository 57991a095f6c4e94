"""Sinks: destinations that Kafka topics are written to (see ``sinks.base``)."""
