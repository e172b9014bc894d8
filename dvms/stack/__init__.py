"""One node's whole protocol stack, sans-I/O: the overlay core (Kademlia + Vivaldi) and
the partition core composed into a ``NodeCore``, built the same way by the daemon, the
simulators and the test harness (``build_cores``)."""
