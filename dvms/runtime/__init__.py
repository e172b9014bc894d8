"""The Trio runtime: the only layer that awaits, reads clocks and touches sockets and
drivers. One shell drives a node's ``NodeCore`` (``node``); the daemon's services sit in
``services/``; the control socket's server and commands in ``control/``; ``client`` is
what the CLI uses to talk to a running node."""
