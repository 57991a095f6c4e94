"""Sources: pipelines that publish data from outside systems into Kafka.

``base`` is the contract (a reader says what to publish; :class:`SourceRunner`
owns leadership, retry, pause, status, dead letters and the position), and
``position`` the store of a source's resume state. One package per source type:
``mysql_binlog`` (row changes) and ``object_store`` (replay of archived topics).
How to add one: docs/write-your-own.md.
"""
