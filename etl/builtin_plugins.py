"""The sink and source types that ship with the framework.

They are registered the way a third-party package registers its own: through the
entry points ``faust_etl.sinks`` and ``faust_etl.sources`` in ``pyproject.toml``,
each naming one of the :class:`~etl.plugins.Plugin` objects below.
"""

from etl.plugins import Plugin

OPENSEARCH_SINK = Plugin(
    "sink",
    "opensearch",
    "sinks.opensearch.config:OpenSearchSinkConfig",
    "sinks.opensearch.sink:OpenSearchSinkPipeline",
    "opensearch",
)
POSTGRES_SINK = Plugin(
    "sink",
    "postgres",
    "sinks.postgres.config:PostgresSinkConfig",
    "sinks.postgres.sink:PostgresSinkPipeline",
    "postgres",
)
MYSQL_SINK = Plugin(
    "sink",
    "mysql",
    "sinks.mysql.config:MySQLSinkConfig",
    "sinks.mysql.sink:MySQLSinkPipeline",
    "mysql",
)
OBJECT_STORE_SINK = Plugin(
    "sink",
    "object_store",
    "sinks.object_store.config:ObjectStoreSinkConfig",
    "sinks.object_store.sink:ObjectStoreSinkPipeline",
    "object_store",
)
HTTP_SINK = Plugin(
    "sink", "http", "sinks.http.config:HttpSinkConfig", "sinks.http.sink:HttpSinkPipeline", "http"
)
MYSQL_BINLOG_SOURCE = Plugin(
    "source",
    "mysql_binlog",
    "etl.sources.mysql_binlog.config:MySQLBinlogSourceConfig",
    "etl.sources.mysql_binlog.source:MySQLBinlogSource",
    "mysql_binlog",
)
OBJECT_STORE_SOURCE = Plugin(
    "source",
    "object_store",
    "etl.sources.object_store.config:ObjectStoreSourceConfig",
    "etl.sources.object_store.source:ObjectStoreSource",
    "object_store",
)

#: Every built-in type (registered directly when the package metadata is missing).
BUILTIN = [
    OPENSEARCH_SINK,
    POSTGRES_SINK,
    MYSQL_SINK,
    OBJECT_STORE_SINK,
    HTTP_SINK,
    MYSQL_BINLOG_SOURCE,
    OBJECT_STORE_SOURCE,
]
