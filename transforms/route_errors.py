"""Keep only JSON log lines whose level is ERROR, tag them, and split batches.

A value like {"level": "ERROR", "msg": "disk full"} passes with an extra
"routed_by" field; other levels are filtered out (return None); a value that is
a JSON list of log lines fans out into one message per line.
"""

import json

SOURCE_TOPIC = "logs"
TARGET_TOPIC = "logs-errors"
START_OFFSET = "earliest"


def _keep(line):
    return isinstance(line, dict) and str(line.get("level", "")).upper() == "ERROR"


def deal_message(message):
    data = json.loads(message["value"])
    lines = data if isinstance(data, list) else [data]
    out = []
    for line in lines:
        if _keep(line):
            line["routed_by"] = "route_errors"
            out.append({**message, "value": json.dumps(line)})
    return out or None
