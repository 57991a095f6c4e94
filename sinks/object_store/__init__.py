"""The object-store sink: Kafka records as JSON-lines, raw or Parquet objects."""
