"""The workflow engine: each durable operation written once for sync and async.

Layers, lowest first: ``scope`` (positions), ``describe`` (waits in words),
``bridge`` (thread futures on a loop), ``signals`` (release, cancel, deadline),
``history`` (the replay check), ``writes`` (the run's pending and deferred
writes), ``state`` (the run's state), ``effects`` (what operations ask of a
driver), ``attempts`` and ``drivers`` (running a step's body; the sync and async
drivers), then the operations: ``steps`` (with ``call`` and ``conditions``),
``values``, ``timers``, ``messages``, ``events``, ``children``, ``fanin``,
``cancelling``, ``continuing``; ``run`` (the workflow function to its outcome).
``host`` is what the engine needs of the app. Nothing here imports the app, the
client or the worker.
"""
