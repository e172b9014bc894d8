"""The Kademlia overlay as a sans-I/O core (no clock, no sockets, no Trio; the runtime
and the simulator drive it): routing, lookups and the signed DHT records the layers
above keep their state in.

- ``core``      ``OverlayCore``: ``on_message`` / ``on_timer`` / commands in, ``Send`` and
  ``Emit`` (``Joined``, ``LookupDone``, ``PutDone``, ``CrawlDone``) out
- ``config``    ``KademliaConfig`` with its ``lan``/``wan``/``local`` profiles
- ``messages``  the wire messages (``Ping``, ``FindNode``, ``FindValue``, ``Store``, ...)
- ``routing``   the routing table; ``lookup``: one iterative lookup
- ``crawl``     every node of the overlay, by reading routing tables (cluster-wide views)
- ``records``   node identities, signature checks and validators of records
  (``RecordError``), the local record store

Import from the modules; the package re-exports nothing, so importing one of them
(``records`` for a validator) does not load the core.
"""
