"""The timing protocol of ``bench/plan_quality.py``: what each reported time follows.

The engine's speed against the oracle is only meaningful if every engine time is taken
where the bench says it is: each variant's first solves in a pass of their own, before
any CP-SAT solve, and exactly one engine solve per instance and variant right after a
CP-SAT solve (the cold-cache column). A reordering of the passes would change what the
numbers mean without changing any number's name, so the order of calls is checked here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ortools", reason="ortools (the test extra) is not installed")

from bench import plan_quality as pq


def test_engine_pass_precedes_the_oracle_and_one_solve_follows_cp_sat(monkeypatch) -> None:
    calls: list[tuple[str, str]] = []
    real_engine, real_oracle = pq.solve_repair, pq.solve

    def engine(snap, cons, cfg, **kw):
        calls.append(("engine", f"{len(snap.hosts)}-{cfg.objective}-{cfg.local_search_evals}"))
        return real_engine(snap, cons, cfg, **kw)

    def oracle(snap, cons, cfg, **kw):
        calls.append(("oracle", "hint" if kw.get("hint") else "alone"))
        return real_oracle(snap, cons, cfg, **kw)

    monkeypatch.setattr(pq, "solve_repair", engine)
    monkeypatch.setattr(pq, "solve", oracle)
    cases = [(f"8-{mix}-0", *pq.instance(8, mix, 0)) for mix in ("none", "spread")]
    warm_up = ("warm-up", *pq.instance(8, "mix", 1))
    variants = {"engine": (0, "migrations"), "ls": (20, "mttr")}
    rows = pq._run(cases, warm_up, variants, pq._config, True, 5.0, 2, 3)

    first_oracle = next(i for i, (kind, _) in enumerate(calls) if kind == "oracle")
    # engine pass: per variant, one warm-up solve, 2 rounds over the 2 cases, then 3
    # solves of each case in a row
    each = 1 + 2 * 2 + 2 * 3
    assert (
        calls[:first_oracle]
        == [("engine", "8-migrations-0")] * each + [("engine", "8-mttr-20")] * each
    )
    after = calls[first_oracle:]
    # oracle pass: every engine solve there comes right after a CP-SAT solve without
    # the engine's hint, once per case and variant
    engine_at = [i for i, (kind, _) in enumerate(after) if kind == "engine"]
    assert len(engine_at) == len(cases) * len(variants)
    assert all(after[i - 1] == ("oracle", "alone") for i in engine_at)
    assert {name: len(found) for name, found in rows.items()} == {"engine": 2, "ls": 2}
    for found in rows.values():
        for row in found:
            assert row["engine_after_oracle_cpu_s"] > 0
            after_cp_sat, warm = row["probe_cpu_s"]
            assert after_cp_sat > 0 and warm > 0
    summary = pq.summarise(8, rows["ls"])
    assert summary["oracle_objective"] == "mttr"
    for key in ("cpu_speedup", "cpu_warm_speedup", "cpu_after_oracle_speedup"):
        assert summary[key] > 0
