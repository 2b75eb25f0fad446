"""Task code of the queues compared by ``bench/compare.py``, one module per queue.

Each module is imported by its queue's worker (inside that queue's throwaway venv) and by
``python -m bench.peers.run <peer> ...``, which enqueues the benchmark tasks. Nothing here imports
fastq except ``peer_fastq``, so the other modules load in a venv without fastq.
"""
