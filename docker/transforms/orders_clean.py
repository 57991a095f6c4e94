"""The compose stack's transform: JSON orders -> orders-clean, tagged with their origin.

A value that is not JSON raises, so it lands in the dead-letter topic with the
line of this file: try `etl deadletters orders_clean` against the stack.
"""

import json

SOURCE_TOPIC = "orders"
TARGET_TOPIC = "orders-clean"
START_OFFSET = "earliest"


def deal_message(message):
    order = json.loads(message["value"])
    order["source"] = "compose"
    message["value"] = order
    return message
