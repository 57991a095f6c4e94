"""Registers the sink and source types that ship with the framework."""

from etl.plugins import Plugin, register

BUILTIN: list[Plugin] = []

for plugin in BUILTIN:
    register(plugin)
