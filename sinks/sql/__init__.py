"""What the SQL sinks share: options, row building (formats, modes, ``pt``, keys) and the
batch writer with per-record error isolation. Database-specific code lives in
``sinks.postgres`` and ``sinks.mysql``; nothing here imports a driver.
"""
