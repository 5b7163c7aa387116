"""The result database: ingest -> query round trips, idempotent ingest, provenance kept apart, run lookup.

Every test that takes ``store_url`` runs on a real SQLite file and on a real PostgreSQL server (conftest.py,
tests/pg.py). Counters and modelled cost come from the simulated engine on shipped workloads; raw timing
values are made up (seeded), since the store only has to keep what it was given.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import socket
import statistics
import uuid
from collections.abc import Iterator
from functools import cache

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.exc import IntegrityError

from benchsvc.engine import simulate
from benchsvc.records import (
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    WorkloadRef,
)
from benchsvc.store.db import (
    SchemaOutOfDate,
    StoreError,
    current_revision,
    head_revision,
    open_store,
    read_session,
    write_session,
)
from benchsvc.store.ingest import add_result, create_run, finish_run, ingest, registry_versions
from benchsvc.store.models import Base, Environment, Machine, Result, Run, Workload
from benchsvc.store.queries import NotFound, get_run, list_runs, run_results, run_samples, series_history
from benchsvc.workload import resolve

MACHINE_A = MachineInfo("bench-a", "Test CPU @ 3.0GHz", 8, "6.12.0-test", "x86_64")
MACHINE_B = MachineInfo("bench-b", "Test CPU @ 3.0GHz", 8, "6.12.0-test", "x86_64")  # only the host differs
ENV = EnvironmentInfo("3.11.9", {"pyperf": "2.11.0", "numpy": "2.4.6"})
T0 = dt.datetime(2026, 1, 1, 2, 0, 0)
WORKLOADS = ("a-munmap-aligned", "c-straddle-munmap")
VERSIONS = ("base65", "up612")
COUNTER = "rmap_calls"  # differs between base65 and up612 on these workloads


# --- building records by hand -----------------------------------------------------------------------------


@cache
def workload_ref(name: str) -> WorkloadRef:
    spec = resolve(name)
    return WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)


def edited_ref(name: str) -> WorkloadRef:
    """The same workload name with other file contents (so another content hash)."""
    text = workload_ref(name).definition + "\n# edited\n"
    return WorkloadRef(name, hashlib.sha256(text.encode()).hexdigest(), text, "edited")


def run_record(
    started_at: dt.datetime = T0,
    *,
    machine: MachineInfo = MACHINE_A,
    environment: EnvironmentInfo = ENV,
    run_uuid: str | None = None,
    **kw: object,
) -> RunRecord:
    return RunRecord(
        uuid=run_uuid or str(uuid.uuid4()),
        started_at=started_at,
        machine=machine,
        environment=environment,
        benchsvc_version="0.1.0",
        git_commit="0123456789abcdef0123456789abcdef01234567",
        pyperf_settings={"processes": 3, "values": 4},
        **kw,  # type: ignore[arg-type]
    )


def timings(seed: int, processes: int = 3, values: int = 4) -> tuple[ProcessValues, ...]:
    rng = random.Random(seed)
    return tuple(
        ProcessValues(
            values=tuple(rng.uniform(1e-4, 2e-3) for _ in range(values)),
            warmups=(rng.uniform(1e-4, 2e-3),),
            loops=rng.choice((1, 2, 4)),
        )
        for _ in range(processes)
    )


def sim_result(workload: str | WorkloadRef, version: str, seed: int = 0, **kw: object) -> ResultRecord:
    ref = workload_ref(workload) if isinstance(workload, str) else workload
    sim = simulate(resolve(ref.name), version)
    fields: dict[str, object] = {
        "engine": "sim",
        "version": version,
        "workload": ref,
        "counters": sim.counters,
        "modeled_ns": sim.modeled_ns,
        "processes": timings(seed),
        "warnings": ("std dev is 12% of the mean",) if seed % 2 else (),
        "pyperf_metadata": {"seed": seed},
        "started_at": T0,
        "finished_at": T0 + dt.timedelta(seconds=1),
    }
    fields.update(kw)
    return ResultRecord(**fields)  # type: ignore[arg-type]


def matrix(seed: int = 0) -> list[ResultRecord]:
    return [
        sim_result(w, v, seed=seed + 10 * i + j)
        for i, w in enumerate(WORKLOADS)
        for j, v in enumerate(VERSIONS)
    ]


def failed_result(workload: str, version: str) -> ResultRecord:
    return ResultRecord("sim", version, workload_ref(workload), status="failed", error="worker exited with 1")


def store_ingest(engine: Engine, record: RunRecord, results: list[ResultRecord]) -> tuple[int, int]:
    """Ingest in a write transaction of its own; (run id, results added)."""
    with write_session(engine) as s:
        run, added = ingest(s, record, results, versions=registry_versions())
        return run.id, added


def row_counts(engine: Engine) -> dict[str, int]:
    with read_session(engine) as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


@pytest.fixture
def store(store_url: str) -> Iterator[Engine]:
    engine = open_store(store_url)
    yield engine
    engine.dispose()


# --- schema on first use --------------------------------------------------------------------------------


def test_new_database_is_created_at_head_on_first_open(store_url: str) -> None:
    engine = open_store(store_url)
    try:
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert all(n == 0 for n in row_counts(engine).values())
    finally:
        engine.dispose()
    again = open_store(store_url)  # a second open finds it at head and changes nothing
    try:
        assert current_revision(again) == head_revision()
    finally:
        again.dispose()


def test_sqlite_store_uses_wal_and_a_busy_timeout(tmp_path) -> None:
    engine = open_store(str(tmp_path / "x.db"))  # a plain path means a SQLite file
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_open_without_create_refuses_an_empty_database(store_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="run benchsvc db upgrade") as exc:
        open_store(store_url, create=False)
    assert "\n" not in str(exc.value)


# --- ingest -> query --------------------------------------------------------------------------------------


def test_ingest_then_queries_return_the_ingested_values(store: Engine) -> None:
    results = [*matrix(seed=1), failed_result("b-dontneed-first-page", "up612")]
    run_id, added = store_ingest(store, run_record(), results)
    assert added == len(results)
    ok = [r for r in results if r.status == "ok"]

    with read_session(store) as s:
        for rec in ok:
            key = {"workload": rec.workload.name, "version": rec.version}
            hist = series_history(s, **key)
            assert len(hist) == 1
            row = hist.iloc[0]
            assert row["run_id"] == run_id
            assert row["value"] == statistics.fmean(rec.values) == row["mean_s"]
            assert row["median_s"] == statistics.median(rec.values)
            assert row["stdev_s"] == statistics.stdev(rec.values)
            assert row["n_values"] == len(rec.values) == 12
            assert row["machine_fp"] == MACHINE_A.fingerprint
            assert row["environment_fp"] == ENV.fingerprint
            assert row["workload_hash"] == rec.workload.content_hash
            modeled = series_history(s, **key, metric="modeled_ns")
            assert modeled["value"].tolist() == [rec.modeled_ns]
            counter = series_history(s, **key, metric=COUNTER)
            assert counter["value"].tolist() == [rec.counters[COUNTER]]
        # a failed result is not part of any series
        assert series_history(s, workload="b-dontneed-first-page", version="up612").empty
        # the chosen counter really tells the versions apart (else the check above proves little)
        assert len({r.counters[COUNTER] for r in ok if r.workload.name == WORKLOADS[0]}) == 2

        df = run_results(s, run_id)
        assert len(df) == len(results)
        for rec in results:
            row = df[(df["workload"] == rec.workload.name) & (df["version"] == rec.version)].iloc[0]
            assert row["status"] == rec.status
            assert row["engine"] == "sim"
            assert row["workload_hash"] == rec.workload.content_hash
            if rec.status == "failed":
                assert row["error"] == rec.error
                assert row["n_values"] == 0
                continue
            assert row["modeled_ns"] == rec.modeled_ns
            assert list(row["warnings"]) == list(rec.warnings)
            for name, value in rec.counters.items():
                assert row[f"c_{name}"] == value, name
        assert {c for c in df.columns if c.startswith("c_")} == {f"c_{n}" for n in ok[0].counters}
        parents = {v.id: v.parent for v in registry_versions()}
        got_parents = {
            v: None if p != p else p for v, p in zip(df["version"], df["parent"], strict=True)
        }  # NaN
        assert got_parents == {v: parents[v] for v in df["version"]}

        samples = run_samples(s, run_id)
        assert len(samples) == sum(len(r.values) for r in results)
        for rec in ok:
            mine = samples[(samples["workload"] == rec.workload.name) & (samples["version"] == rec.version)]
            assert sorted(set(mine["process"])) == list(range(len(rec.processes)))
            for i, proc in enumerate(rec.processes):
                p = mine[mine["process"] == i]
                assert p["value_s"].tolist() == list(proc.values)  # every raw value, in order
                assert p["value_index"].tolist() == list(range(len(proc.values)))


def test_ingest_of_the_same_run_twice_adds_nothing(store: Engine) -> None:
    record, results = run_record(), matrix(seed=2)
    _, added = store_ingest(store, record, results)
    assert added == len(results)
    before = row_counts(store)
    assert before["results"] == len(results)
    assert before["samples"] == 3 * len(results)

    run_id, added = store_ingest(store, record, results)
    assert added == 0
    assert row_counts(store) == before

    # a result the stored run does not have yet is added, the rest is still skipped
    extra = sim_result("e-mixed-order0-large", "up612", seed=99)
    assert store_ingest(store, record, [*results, extra]) == (run_id, 1)
    after = row_counts(store)
    assert after["results"] == before["results"] + 1
    assert after["runs"] == before["runs"] == 1


def test_the_same_result_listed_twice_in_one_ingest_is_stored_once(store: Engine) -> None:
    rec = sim_result(WORKLOADS[0], "up612")
    _, added = store_ingest(store, run_record(), [rec, rec])
    assert added == 1
    assert row_counts(store)["results"] == 1


def test_runner_path_create_run_add_results_finish(store: Engine) -> None:
    """What ``benchsvc run`` does: one transaction per result, then the final status."""
    with write_session(store) as s:
        run = create_run(s, run_record())
        run_id = run.id
        assert run.status == "running"
    for rec in matrix(seed=3):
        with write_session(store) as s:
            add_result(s, s.get(Run, run_id), rec)
    with write_session(store) as s:
        finish_run(s, s.get(Run, run_id), "complete")
    with read_session(store) as s:
        run = get_run(s, run_id)
        assert run.status == "complete"
        assert run.finished_at is not None
        assert len(run.results) == 4
    # adding a result that is already there is an error (only ingest skips it)
    with pytest.raises(IntegrityError), write_session(store) as s:
        add_result(s, s.get(Run, run_id), sim_result(WORKLOADS[0], VERSIONS[0]))
    assert row_counts(store)["results"] == 4


# --- provenance -------------------------------------------------------------------------------------------


def test_two_machines_are_two_series_never_merged(store: Engine) -> None:
    assert MACHINE_A.fingerprint != MACHINE_B.fingerprint
    rec_a = sim_result(WORKLOADS[0], "up612", seed=4)
    rec_b = sim_result(WORKLOADS[0], "up612", seed=5)
    id_a, _ = store_ingest(store, run_record(T0, machine=MACHINE_A), [rec_a])
    id_b, _ = store_ingest(store, run_record(T0 + dt.timedelta(days=1), machine=MACHINE_B), [rec_b])
    with read_session(store) as s:
        hist = series_history(s, workload=WORKLOADS[0], version="up612")
        assert hist["run_id"].tolist() == [id_a, id_b]
        assert hist["machine_fp"].tolist() == [MACHINE_A.fingerprint, MACHINE_B.fingerprint]
        assert hist["machine"].tolist() == ["bench-a", "bench-b"]
        assert hist["value"].tolist() == [statistics.fmean(rec_a.values), statistics.fmean(rec_b.values)]
        only_b = series_history(s, workload=WORKLOADS[0], version="up612", machine="bench-b")
        assert only_b["run_id"].tolist() == [id_b]
        by_fp = series_history(s, workload=WORKLOADS[0], version="up612", machine=MACHINE_A.fingerprint[:12])
        assert by_fp["run_id"].tolist() == [id_a]
    assert row_counts(store)["machines"] == 2


def test_two_contents_of_one_workload_name_are_two_series(store: Engine) -> None:
    old, new = workload_ref(WORKLOADS[0]), edited_ref(WORKLOADS[0])
    assert old.name == new.name and old.content_hash != new.content_hash
    store_ingest(store, run_record(T0), [sim_result(old, "up612", seed=6)])
    store_ingest(store, run_record(T0 + dt.timedelta(days=1)), [sim_result(new, "up612", seed=7)])
    env2 = EnvironmentInfo("3.12.1", {"pyperf": "2.11.0", "numpy": "2.4.6"})
    store_ingest(store, run_record(T0 + dt.timedelta(days=2), environment=env2), [sim_result(new, "up612")])
    with read_session(store) as s:
        hist = series_history(s, workload=WORKLOADS[0], version="up612")
        assert hist["workload_hash"].tolist() == [old.content_hash, new.content_hash, new.content_hash]
        assert hist["environment_fp"].tolist() == [ENV.fingerprint, ENV.fingerprint, env2.fingerprint]
        rows = s.execute(select(Workload.content_hash, Workload.definition).where(Workload.name == old.name))
        assert dict(rows.all()) == {
            old.content_hash: old.definition,
            new.content_hash: new.definition,
        }


def test_machines_environments_workloads_are_stored_once(store: Engine) -> None:
    for day in range(3):
        machine = MACHINE_A if day % 2 == 0 else MACHINE_B
        store_ingest(store, run_record(T0 + dt.timedelta(days=day), machine=machine), matrix(seed=day))
    store_ingest(
        store, run_record(T0 + dt.timedelta(days=3)), [sim_result(edited_ref(WORKLOADS[0]), "up612")]
    )
    counts = row_counts(store)
    assert counts["runs"] == 4
    assert counts["results"] == 3 * 4 + 1
    assert counts["machines"] == 2
    assert counts["environments"] == 1
    assert counts["workloads"] == len(WORKLOADS) + 1
    assert counts["versions"] == len(registry_versions())
    with read_session(store) as s:
        assert set(s.scalars(select(Machine.fingerprint))) == {MACHINE_A.fingerprint, MACHINE_B.fingerprint}
        assert s.scalars(select(Environment.packages)).one() == dict(ENV.packages)
        assert s.scalar(select(func.count(func.distinct(Result.workload_id)))) == len(WORKLOADS) + 1


# --- runs -------------------------------------------------------------------------------------------------


def test_get_run_by_id_uuid_prefix_and_latest(store: Engine) -> None:
    with read_session(store) as s, pytest.raises(NotFound, match="no runs yet") as exc:
        get_run(s)
    assert "\n" not in str(exc.value)

    uuids = [
        "abcdef01-0000-4000-8000-000000000001",
        "abcdef02-0000-4000-8000-000000000002",
        "12345678-0000-4000-8000-000000000003",
    ]
    # ingested out of order: the latest run is the one that started last, not the last inserted
    starts = [T0 + dt.timedelta(days=2), T0, T0 + dt.timedelta(days=1)]
    ids = [store_ingest(store, run_record(t, run_uuid=u), [])[0] for u, t in zip(uuids, starts, strict=True)]

    with read_session(store) as s:
        assert get_run(s).uuid == uuids[0]
        for run_id, u in zip(ids, uuids, strict=True):
            assert get_run(s, run_id).uuid == u
            assert get_run(s, str(run_id)).uuid == u
            assert get_run(s, u).id == run_id
            assert get_run(s, u[:8]).id == run_id
        for ref, message in [
            ("abcdef0", "ambiguous"),
            ("ffff", "no run 'ffff'"),
            (999_999, "no run '999999'"),
        ]:
            with pytest.raises(NotFound, match=message) as exc:
                get_run(s, ref)
            assert "\n" not in str(exc.value)


def test_list_runs_counts_ok_and_failed_results(store: Engine) -> None:
    mixed = [
        *matrix(seed=8)[:3],
        failed_result("b-dontneed-first-page", "up612"),
        failed_result(WORKLOADS[0], "v1"),
    ]
    id_mixed, _ = store_ingest(store, run_record(T0), mixed)
    id_empty, _ = store_ingest(store, run_record(T0 + dt.timedelta(days=1), machine=MACHINE_B), [])
    with read_session(store) as s:
        df = list_runs(s)
        assert df["run_id"].tolist() == [id_empty, id_mixed]  # newest first
        by_id = df.set_index("run_id")
        assert by_id.loc[id_mixed, ["results", "ok", "failed"]].tolist() == [5, 3, 2]
        assert by_id.loc[id_empty, ["results", "ok", "failed"]].tolist() == [0, 0, 0]
        assert by_id.loc[id_empty, "machine"] == "bench-b"
        assert list_runs(s, limit=1)["run_id"].tolist() == [id_empty]


# --- property: whatever goes in comes out -----------------------------------------------------------------

counter_names = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)
raw_values = st.floats(min_value=0.0, max_value=1e3, exclude_min=True, allow_nan=False, allow_infinity=False)
result_strategy = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["v1", "v2", "up612"]),
        # up to 2**53: beyond that see test_run_results_keeps_64_bit_counters_exact
        "counters": st.dictionaries(counter_names, st.integers(0, 2**53), max_size=6),
        "processes": st.lists(
            st.tuples(st.lists(raw_values, min_size=1, max_size=6), st.integers(1, 2**20)),
            min_size=1,
            max_size=4,
        ),
        "modeled_ns": st.none() | st.floats(min_value=0, max_value=1e12, allow_nan=False),
    }
)


@given(specs=st.lists(result_strategy, min_size=1, max_size=3))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_ingest_then_query_returns_the_same_values(store: Engine, specs: list[dict]) -> None:
    # every example is a new run with workloads of its own, so examples sharing the database do not interact
    tag = uuid.uuid4().hex[:8]
    records = [
        ResultRecord(
            engine="sim",
            version=spec["version"],
            workload=WorkloadRef(f"prop-{tag}-{i}", hashlib.sha256(f"{tag}{i}".encode()).hexdigest(), "x"),
            counters=spec["counters"],
            modeled_ns=spec["modeled_ns"],
            processes=tuple(ProcessValues(values=tuple(v), loops=loops) for v, loops in spec["processes"]),
        )
        for i, spec in enumerate(specs)
    ]
    run_id, added = store_ingest(store, run_record(), records)
    assert added == len(records)
    with read_session(store) as s:
        df = run_results(s, run_id).set_index("workload")
        samples = run_samples(s, run_id)
        for rec in records:
            row = df.loc[rec.workload.name]
            got = {c[2:]: row[c] for c in df.columns if c.startswith("c_") and not pd.isna(row[c])}
            assert got == rec.counters
            assert row["n_values"] == len(rec.values)
            assert row["mean_s"] == statistics.fmean(rec.values)
            mine = samples[samples["workload"] == rec.workload.name]
            assert [mine[mine["process"] == i]["value_s"].tolist() for i in range(len(rec.processes))] == [
                list(p.values) for p in rec.processes
            ]
            hist = series_history(s, workload=rec.workload.name, version=rec.version)
            assert hist["value"].tolist() == [statistics.fmean(rec.values)]
            modeled = series_history(s, workload=rec.workload.name, version=rec.version, metric="modeled_ns")
            if rec.modeled_ns is None:
                assert len(modeled) == 1 and modeled["value"].isna().all()
            else:
                assert modeled["value"].tolist() == [rec.modeled_ns]
            for name, value in rec.counters.items():
                c = series_history(s, workload=rec.workload.name, version=rec.version, metric=name)
                assert c["value"].tolist() == [value]


# --- known bugs -------------------------------------------------------------------------------------------


def test_run_results_keeps_64_bit_counters_exact(tmp_path) -> None:
    engine = open_store(str(tmp_path / "x.db"))
    try:
        big = 2**53 + 1
        records = [
            dataclasses.replace(sim_result(WORKLOADS[0], "up612"), counters={"big": big, "small": 1}),
            dataclasses.replace(sim_result(WORKLOADS[1], "up612"), counters={"small": 2}),
        ]
        run_id, _ = store_ingest(engine, run_record(), records)
        with read_session(engine) as s:
            assert series_history(s, workload=WORKLOADS[0], version="up612", metric="big")[
                "value"
            ].tolist() == [big]
            df = run_results(s, run_id).set_index("workload")
            assert int(df.loc[WORKLOADS[0], "c_big"]) == big
    finally:
        engine.dispose()


def test_get_run_prefix_is_not_a_like_pattern(tmp_path) -> None:
    engine = open_store(str(tmp_path / "x.db"))
    try:
        store_ingest(engine, run_record(run_uuid="abcdef01-0000-4000-8000-000000000001"), [])
        with read_session(engine) as s:
            for ref in ("%", "_", "abcdef0_"):
                with pytest.raises(NotFound):
                    get_run(s, ref)
    finally:
        engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["postgres-alias", "server-down", "not-sqlite"])
def test_a_database_that_cannot_be_opened_is_a_one_line_store_error(tmp_path, case: str) -> None:
    if case == "postgres-alias":
        db = f"postgres://bench@127.0.0.1:{_closed_port()}/x"
    elif case == "server-down":
        db = f"postgresql://bench@127.0.0.1:{_closed_port()}/x"
    else:
        (tmp_path / "notes.db").write_text("not a database\n" * 100)
        db = str(tmp_path / "notes.db")
    with pytest.raises(StoreError) as exc:
        open_store(db)
    assert "\n" not in str(exc.value)
