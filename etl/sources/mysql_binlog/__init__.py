"""The ``mysql_binlog`` source: MySQL/MariaDB row changes as JSON change events in Kafka.

Modules: ``config`` (options, no driver imports), ``types`` (MySQL type -> envelope
type and value), ``envelope`` (message bytes, keys, sequence ids), ``ddl`` (which
tables a DDL statement touches), ``position`` (binlog positions and their store in
a compacted topic), ``db`` (connections), ``preflight`` (server and grant checks),
``snapshot`` (initial copy of existing rows), ``reader`` (the binlog thread) and
``source`` (the service the worker runs).
"""
