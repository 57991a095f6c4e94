"""Connectors (sinks and sources) added, changed and removed while the workers run.

* :mod:`etl.connectors.spec` - one connector's configuration: validated, compared;
* :mod:`etl.connectors.files` - ``connectors/*.yaml``, watched like ``transforms/``;
* :mod:`etl.connectors.secrets` - how an API-given secret is stored in the control topic;
* :mod:`etl.connectors.manager` - applies every change to the supervisor's pipelines;
* :mod:`etl.connectors.purge` - what deleting one with ``--purge`` removes.

docs/connectors.md is the user's page.
"""
