"""The chaos suite: prove that shadows loses nothing while workers and Redis are abused.

One producer schedules a known mix of tasks while worker processes run them; meanwhile
workers are killed (SIGKILL), stopped (SIGTERM) and restarted, and Redis is restarted
(SIGTERM and SIGKILL, with AOF persistence) and paused (SIGSTOP/SIGCONT) past the clients'
socket timeouts. Every run is recorded in files outside Redis; at the end the verifier
checks that every accepted task ran, none ran early, no two runs of one key overlapped,
the queue is empty and no key without an expiry is left behind.

Run it with ``python scripts/chaos --duration 10m`` (see ``python scripts/chaos --help``);
a short run is part of the test suite (``tests/test_chaos.py``).
"""
