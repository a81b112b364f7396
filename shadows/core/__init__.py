"""What everything stands on: keys, messages, encoding, the connection and the scripts."""
