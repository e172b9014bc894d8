"""The DVMS partition protocol (the Iterative Scheduling Procedure) as a sans-I/O core,
over the overlay and the placement engine: a node that sees a problem starts a
partition, recruits neighbours until the placement engine solves the problem on them,
and the leader has the plan carried out.

- ``core``       ``PartitionCore``, with ``membership``, ``acting``, ``recruit`` and
  ``timers`` as its parts; ``base`` declares the state they share and holds the
  requests (``dvms.requests``); ``transitions`` is the (state, input) -> handler table
- ``messages``   the wire messages and the records they carry (``HostState``, ...)
- ``events``     what the core returns (effects and events)
- ``solve``      the placement engine on exactly a partition's hosts
- ``carried``    the constraints running VMs carry; ``directory``: where each VM runs
- ``config``     ``PartitionConfig``
"""
