"""The OpenSearch (and Elasticsearch-compatible) sink.

``config`` holds the light pydantic model (no driver import); ``sink`` holds
:class:`~sinks.opensearch.sink.OpenSearchSink` and its pipeline, which need the
``opensearch`` extra (opensearch-py).
"""
