"""Registers the sink and source types that ship with the framework."""

from etl.plugins import Plugin, register

BUILTIN = [
    # Plugin("sink", "postgres", "sinks.postgres.config:PostgresSinkConfig",
    #        "sinks.postgres.sink:PostgresSink", "postgres"),
]

for plugin in BUILTIN:
    register(plugin)
