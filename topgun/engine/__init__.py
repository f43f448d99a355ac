"""The client's engine: writes (queue, batches, acks), requests (with failover retries), connection providers.

``engine.py`` (the write engine), ``writes.py`` (its records and queue), ``requests.py`` (the
request runner), ``provider.py`` (the provider contract and the single-server provider),
``reads.py`` (point reads and map walks through the Merkle tree). Formerly ``topgun.sync``;
"sync" in TopGun means Merkle synchronisation, which this package only reads through.

Not in here: the cluster provider (``topgun.cluster``), the retry policy (``topgun.retry``).
"""
