"""The cluster's shared control state, kept in Kafka itself.

* :mod:`etl.control.log` - one compacted topic that every worker reads from the start;
* :mod:`etl.control.state` - the table built from it (requests, heartbeats, details);
* :mod:`etl.control.plane` - a worker's (or a CLI command's) reader and writer.

Operators' requests (pause, resume, stop, restart) are records in that topic,
so every worker obeys them, a worker that starts later too, and nothing is lost
when a worker dies. docs/operations.md ("The control topic") says how to back it up.
"""
