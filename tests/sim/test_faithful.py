"""The faithful mode: full Trio node shells (``NodeRunner`` over ``SimNetwork``, one
``SimHypervisor`` per host, MockClock) run the same script as the engine path (an
overload, a spread vjob, random lookups) and reach the same outcome."""

from __future__ import annotations

from dvms.sim.faithful import FaithfulConfig, run_engine, run_faithful


def test_trio_shells_and_engine_agree_on_overload_launch_and_lookups():
    cfg = FaithfulConfig(nodes=24, seed=23)
    engine = run_engine(cfg)
    shells = run_faithful(cfg)
    # the script really exercised both paths
    for r in (engine, shells):
        assert r.lookups == cfg.lookups and r.lookups_exact == cfg.lookups, r
        assert r.overloads_resolved >= 1 and r.overloads_failed == 0, r
        assert r.hosts_over_capacity == 0, r
        assert r.launch_placed and r.launch_hosts == cfg.launch_vms, r  # spread held
        assert r.vms == cfg.nodes * cfg.vms_per_host + cfg.launch_vms, r
    assert shells.outcome_class() == engine.outcome_class(), (engine, shells)
