"""The ``mysql_binlog`` source: MySQL/MariaDB row changes as JSON change events in Kafka.

Modules: ``config`` (options, no driver imports), ``source`` (the service the worker
runs), ``leader`` (one worker per source), ``preflight`` (server and grant checks),
``start`` (where a run begins), ``position`` (positions and their compacted topic),
``reader`` (the binlog thread), ``snapshot`` (existing rows), ``changes`` (events ->
messages), ``rowcodec`` (fast row decoding), ``types`` (MySQL type -> event type and
value), ``envelope`` (message bytes, keys, partitions), ``ddl`` (tables a statement
touches), ``batches`` and ``handoff`` (thread -> loop), ``progress`` (lag), ``db``.
"""
