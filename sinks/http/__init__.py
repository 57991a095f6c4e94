"""The HTTP / function sink: batches of exported messages to a URL or a Python callable."""
