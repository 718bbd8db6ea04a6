"""Challenge mode: scoring against labels that never leave the server.

* :mod:`~cellbench.challenge.config` - the YAML declaration of a challenge;
* :mod:`~cellbench.challenge.prepare` - partition, label commitment, public and input stores;
* :mod:`~cellbench.challenge.scoring` - one pass over the hidden split, public-safe aggregates;
* :mod:`~cellbench.challenge.receipts` - Ed25519-signed receipts and their offline check.

The server that runs challenges (accounts, queue, workers, pages) is :mod:`cellbench.server`.
"""
