"""The simulator: the real protocol cores on a virtual clock and a seeded network, in a
deterministic event order. It sits above the stack (``dvms.stack``) beside the runtime;
the CLI's ``dvms sim`` commands drive it.

- ``engine``      ``Engine``: the event loop driving ``SimNode`` cores
- ``world``       ``World``: the datacenter (hosts, VMs, load, migrations, metrics) a
  scheduler runs in
- ``scenario``    ``Scenario`` loaded from TOML; ``topology``: its network
- ``run``         ``run_scenario(scenario, scheduler)``: one run and its summary
- ``schedulers``  the schedulers compared, registered by name (static, centralized, dvms)
- ``overlay``     ``dvms sim overlay``: thousands of Kademlia + Vivaldi cores
- ``metrics``, ``report``, ``figures``: what a run measures and how it is shown
- ``faithful``    the daemon's own Trio shells on a simulated network, for comparison
- ``invariants``, ``solvercost``: the partition safety checks and the solver cost model

The package re-exports nothing: a run loads the stack, and ``dvms --help`` must not.
"""
