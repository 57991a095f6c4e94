"""Alerts: rules over the cluster's status, evaluated by one worker, sent to notifiers.

* :mod:`etl.alerts.config` - the ``alerts:`` section of etl.yaml and the ``alerts/``
  directory beside it (rules, notifiers, durations);
* :mod:`etl.alerts.rules` - pure functions: which pipelines a rule covers, what a
  condition measures, and the fire / repeat / resolve state machine;
* :mod:`etl.alerts.notify` - webhook, Slack-compatible and command notifiers, with
  retries;
* :mod:`etl.alerts.evaluator` - the worker-side loop: one evaluator per cluster,
  alert state kept in the control topic;
* :mod:`etl.alerts.prometheus` - the Prometheus alerting-rules file for the same
  conditions.

Nothing here is imported by :mod:`etl.config` except the config models, so that
loading the settings stays cheap.
"""
