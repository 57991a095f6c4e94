"""Registers the sink and source types that ship with the framework."""

from etl.plugins import Plugin, register

BUILTIN: list[Plugin] = [
    Plugin(
        "sink",
        "opensearch",
        "sinks.opensearch.config:OpenSearchSinkConfig",
        "sinks.opensearch.sink:OpenSearchSinkPipeline",
        "opensearch",
    ),
    Plugin(
        "sink",
        "postgres",
        "sinks.postgres.config:PostgresSinkConfig",
        "sinks.postgres.sink:PostgresSinkPipeline",
        "postgres",
    ),
    Plugin(
        "sink",
        "mysql",
        "sinks.mysql.config:MySQLSinkConfig",
        "sinks.mysql.sink:MySQLSinkPipeline",
        "mysql",
    ),
    Plugin(
        "sink",
        "object_store",
        "sinks.object_store.config:ObjectStoreSinkConfig",
        "sinks.object_store.sink:ObjectStoreSinkPipeline",
        "object_store",
    ),
    Plugin(
        "sink",
        "http",
        "sinks.http.config:HttpSinkConfig",
        "sinks.http.sink:HttpSinkPipeline",
        "http",
    ),
    Plugin(
        "source",
        "mysql_binlog",
        "etl.sources.mysql_binlog.config:MySQLBinlogSourceConfig",
        "etl.sources.mysql_binlog.source:MySQLBinlogSource",
        "mysql_binlog",
    ),
    Plugin(
        "source",
        "object_store",
        "etl.sources.object_store.config:ObjectStoreSourceConfig",
        "etl.sources.object_store.source:ObjectStoreSource",
        "object_store",
    ),
]

for plugin in BUILTIN:
    register(plugin)
