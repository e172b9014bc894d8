"""The timing protocol of ``bench/plan_quality.py``: what each reported time follows.

The engine's speed against the oracle is only meaningful if every engine time is taken
where the bench says it is: in whole rounds over every instance, one before the
oracle's first solve and one after its work on each instance (so that the engine's
samples span the same minutes as the oracle's), and exactly one engine solve per
instance and variant right after a CP-SAT solve (the cold-cache column). A reordering
would change what the numbers mean without changing any number's name, so the order
of calls is checked here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ortools", reason="ortools (the test extra) is not installed")

from bench import plan_quality as pq


def test_engine_rounds_around_the_oracle_and_one_solve_after_cp_sat(monkeypatch) -> None:
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
    rows = pq._run(cases, warm_up, variants, pq._config, True, 5.0, 3)

    first_oracle = next(i for i, (kind, _) in enumerate(calls) if kind == "oracle")
    # one engine round before the oracle: per variant, one warm-up solve, then 3
    # solves of each case in a row
    each = 1 + 2 * 3
    assert (
        calls[:first_oracle]
        == [("engine", "8-migrations-0")] * each + [("engine", "8-mttr-20")] * each
    )
    after = calls[first_oracle:]
    # oracle pass: every engine solve there comes right after a CP-SAT solve without
    # the engine's hint, once per case and variant
    # the oracle's pass: per case, per variant an oracle solve without the engine's
    # hint and one engine solve right after it, the hinted oracle solves, then an
    # engine round (both variants) as above
    engine_at = [i for i, (kind, _) in enumerate(after) if kind == "engine"]
    right_after = [i for i in engine_at if after[i - 1] == ("oracle", "alone")]
    assert len(right_after) == len(cases) * len(variants)
    assert len(engine_at) == len(right_after) + len(cases) * 2 * each
    rounds = [i for i in engine_at if i not in right_after]
    end = 0
    for case in range(len(cases)):  # each round runs whole, after the case's oracle work
        block = rounds[case * 2 * each : (case + 1) * 2 * each]
        assert block == list(range(block[0], block[0] + 2 * each))
        assert ("oracle", "alone") in after[end : block[0]]
        end = block[-1] + 1
    assert end == len(after)  # the last round closes the run
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
