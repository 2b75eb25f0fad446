"""Every Redis operation of fastq, in one layer (in the spirit of Asynq's ``internal/rdb``).

* ``calls``: the one ``Call`` type (a Lua script or a redis-py command), one round trip of calls
  with the one ``NOSCRIPT`` path, and the sync/async drivers of the plan/execute protocol;
* ``window``: one call in flight while the next is built (``enqueue_many``);
* ``scripts``: the Lua scripts of ``fastq/lua``, loaded once, run by SHA.
* ``aggregation``: group aggregation's operations (groups, aggregation sets, their reclaim and the
  sweep for unlisted groups); ``fastq.server.aggregator`` decides when to run them;
* ``inspect_read``, ``inspect_write``: the Inspector's operations, as steps generators that
  ``fastq.inspect.Inspector`` and ``AsyncInspector`` drive.

Modules above this layer describe what to write; this layer decides how it goes over the wire.
"""
