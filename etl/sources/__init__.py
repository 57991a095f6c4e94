"""Sources: pipelines that publish changes from outside systems into Kafka."""
