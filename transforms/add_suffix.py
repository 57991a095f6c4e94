"""The console's "add prefix/suffix" example: append a suffix to every value.

Send:  etl send orders --key demo --value '{"key": "test"}'
See:   etl consume orders-suffixed --from-beginning
"""

SOURCE_TOPIC = "orders"
TARGET_TOPIC = "orders-suffixed"
START_OFFSET = "earliest"
ON_ERROR = "continue"


def deal_message(message):
    for key_item in message.keys():
        if key_item == "key":
            message[key_item] = message[key_item]
            continue
        if key_item == "value":
            message[key_item] = message[key_item] + "ValueSuffix"
            continue
    return message
