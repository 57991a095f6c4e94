"""The ``object_store`` source: replays what the object-store sink archived into a topic.

Modules: ``config`` (options, the sink's storage options carried over) and
``source`` (listing, reading jsonl/Parquet objects, resume state).
"""
