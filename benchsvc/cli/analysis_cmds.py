"""``benchsvc compare``, ``history``, ``regressions`` (and ``regressions ack``), ``evaluate``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from benchsvc.cli.common import DbOption, float_range, int_range, noise_line, open_db
from benchsvc.cli.output import Format, Interval, Kind, echo, quantity, render, signed_quantity
from benchsvc.errors import BenchsvcError

#: Ten times the default: a series of the A/A scenarios holds 100 nights x 60 values (48 kB) in memory.
MAX_TRIALS = 10_000

FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
MachineOption = Annotated[
    str | None,
    typer.Option("--machine", metavar="HOST", help="Only this machine: hostname or fingerprint prefix."),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="DATE",
        help="Only runs started at or after this UTC date or time (YYYY-MM-DD, ISO 8601 with an offset).",
    ),
]


def _date(text: str | None, option: str) -> dt.datetime | None:
    """``--since``: the parser ``benchsvc export`` uses (offsets honoured, out-of-range times refused)."""
    if text is None:
        return None
    from benchsvc.store.exchange import parse_when

    return parse_when(text, option)


WorkloadFilter = Annotated[
    list[str] | None,
    typer.Option("--workload", "-w", help="Only this workload; repeat for several."),
]
VersionFilter = Annotated[
    list[str] | None,
    typer.Option("--version", "-V", help="Only this version (the compared one); repeat for several."),
]


def compare(
    run_ref: Annotated[
        str | None, typer.Option("--run", help="Run id or uuid prefix (default: the latest).")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="RUN",
            help="Compare --run with this other run instead (run to run: each version and workload of --run "
            "against the same version and workload content in RUN, unpaired).",
        ),
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Compare every version with this one instead of its parent.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="time, modeled_ns or a counter; repeat (default: all)."),
    ] = None,
    workload: WorkloadFilter = None,
    version: VersionFilter = None,
    changed: Annotated[
        bool, typer.Option("--changed/--all", help="Only rows that changed significantly.")
    ] = True,
    machine: Annotated[
        str | None,
        typer.Option(
            "--machine",
            metavar="HOST",
            help="Without --run: this machine's latest run (hostname or fingerprint).",
        ),
    ] = None,
    fmt: FormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """The version lineage of one run (of one machine): each version against its parent (or --base), per
    workload and metric; with --against, one run against another.

    Counters and modelled kernel cost: exact differences. The modelled cost (modeled_ns) of every simulated
    version is priced at display time from its stored counters with the machine's latest cost model
    (benchsvc calibrate; the shipped reference model without one), named in the header with its hold-out
    error, and the differences are ranked by it: the (workload, version) with the largest cost change
    first. Time: a ratio with a 95% Student-t interval over worker processes, paired trial by trial where
    the versions were measured interleaved (benchsvc run; between two runs nothing is paired and the
    interval is a bootstrap over processes); significant when it excludes 1, the effect is at least 3%, and
    a confirmation re-measurement (when the run made one) agrees. For simulated versions it is the
    simulator's CPU time (sim_cpu_time in the table), not kernel time; where it and the modelled cost
    disagree in direction, one line says so. A quick-mode run is not sampled enough for timing intervals:
    its timing rows show the ratio only and are never significant. The table is headed by the run's noise
    floor (its v3/v2 A/A intervals and the canary's spread).
    """
    from benchsvc.analysis.lineage import compare_lineage
    from benchsvc.analysis.noise import noise_floor
    from benchsvc.findings import runs_side_by_side
    from benchsvc.runner.blocks import supports_timing_inference
    from benchsvc.store.cost_models import cost_model_for, reprice
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import latest_run_id, machine_ids
    from benchsvc.store.queries import get_run, run_results, run_samples

    if run_ref is not None and machine is not None:
        raise BenchsvcError("--run and --machine do not go together — a run is on one machine: give one")
    if against is not None and base is not None:
        raise BenchsvcError("--against and --base do not go together — compare two runs, or versions in one")
    engine = open_db(db, create=False)
    with read_session(engine) as s:
        run = get_run(s, latest_run_id(s, machine_ids(s, machine)) if machine is not None else run_ref)
        host = run.machine.hostname
        mode, other_mode = run.mode, None
        model = cost_model_for(s, host)
        results, samples = reprice(run_results(s, run.id), model), run_samples(s, run.id)
        _check_filters(run.id, results, workload, version)
        floor = noise_floor(results, samples)
        if against is not None:
            other = get_run(s, against)
            if other.id == run.id:
                raise BenchsvcError(f"--against {against} is run {run.id} itself — give another run")
            other_mode = other.mode
            results, samples = runs_side_by_side(
                results, samples, reprice(run_results(s, other.id), model), run_samples(s, other.id), other.id
            )
            against_text = f" against run {other.id} on {other.machine.hostname} ({other.mode} mode)"
        _check_compare_args(run.id, results, base, metric)
        results = _filtered(results, workload, version, keep_baselines=True)
        df = compare_lineage(results, samples, base=base, metrics=metric)
    df = _filtered(df, workload, version)
    if against is not None:
        df = df[~df["version"].str.contains("@", regex=False)]
    timing_ok = supports_timing_inference(mode) and (
        other_mode is None or supports_timing_inference(other_mode)
    )
    if not timing_ok:
        # quick mode: no timing interval, no timing significance (the sampling does not support them)
        timing = df["metric"] == "time"
        df = df.copy()
        df.loc[timing, ["ci_low", "ci_high"]] = float("nan")
        df.loc[timing, "significant"] = False
        df.loc[timing, "direction"] = "same"
    disagreements = _direction_disagreements(df)
    df = _rank_by_cost(df)
    if changed:
        df = df[df["significant"]]
    rows = df.to_dict("records")
    cols = ["workload", "version", "baseline", "metric", "direction", "value", "baseline_value", "delta"]
    label = model.label()
    if fmt is Format.table:
        header = f"run {run.id} on {host}" + (against_text if against is not None else "")
        echo(f"{header}: {len(rows)} {'changes' if changed else 'comparisons'}")
        echo(
            noise_line(
                floor,
                mode if not supports_timing_inference(mode) or other_mode is None else other_mode,
                timing_ok,
            )
        )
        echo(
            f"modeled_ns: modelled kernel cost, priced by the {label}; ranked by it, largest change first. "
            "sim_cpu_time: the simulator's CPU time, not kernel time"
        )
        for line in disagreements:
            echo(line)
        for r in rows:
            m = str(r["metric"])
            r["value"] = quantity(r["value"], m)
            r["baseline_value"] = quantity(r["baseline_value"], m)
            r["delta"] = signed_quantity(r["delta"], m)
            r["interval"] = Interval(r["ci_low"], r["ci_high"]) if r["kind"] != "exact" else None
            if m == "time" and r["engine"] == "sim":
                r["metric"] = "sim_cpu_time"
        render(rows, [*cols, "ratio", "interval"], fmt, kinds={"ratio": Kind.ratio, "interval": Kind.ratio})
    else:
        for r in rows:
            r["machine"] = host
            r["mode"] = mode
            r["priced_by"] = label if r["metric"] == "modeled_ns" and r["engine"] == "sim" else ""
        render(
            rows,
            [
                *cols,
                "ratio",
                "ci_low",
                "ci_high",
                "significant",
                "confirmed",
                "paired",
                "kind",
                "engine",
                "workload_hash",
                "machine",
                "mode",
                "priced_by",
            ],
            fmt,
        )


def _rank_by_cost(df: Any) -> Any:
    """The lineage rows ordered by the size of the modelled-cost change of their (workload, version,
    baseline), largest first; inside one, the modelled cost first, then the other metrics as they came."""
    if df.empty:
        return df
    key = ["workload", "version", "baseline"]
    cost = df[df["metric"] == "modeled_ns"].copy()
    cost["cost_change"] = cost["delta"].abs()
    ranked = df.merge(cost[[*key, "cost_change"]], on=key, how="left")
    ranked["cost_change"] = ranked["cost_change"].fillna(-1.0)
    ranked["cost_first"] = ranked["metric"] != "modeled_ns"
    ranked["order"] = range(len(ranked))
    ranked = ranked.sort_values(
        ["cost_change", "workload", "version", "cost_first", "order"],
        ascending=[False, True, True, True, True],
        kind="stable",
    )
    return ranked.drop(columns=["cost_change", "cost_first", "order"]).reset_index(drop=True)


def _direction_disagreements(df: Any) -> list[str]:
    """One line per simulated (workload, version) whose significant simulator-time change and modelled-cost
    change point in opposite directions (the simulator's time is not a kernel cost)."""
    out: list[str] = []
    if df.empty:
        return out
    sim = df[(df["engine"] == "sim") & df["significant"]]
    for (workload, version, baseline), g in sim.groupby(["workload", "version", "baseline"], sort=False):
        time = g[g["metric"] == "time"]["direction"].tolist()
        cost = g[g["metric"] == "modeled_ns"]["direction"].tolist()
        if time and cost and {time[0], cost[0]} == {"worse", "better"}:
            out.append(
                f"note: {workload} {version} vs {baseline}: simulator CPU time {time[0]}, modelled kernel cost "
                f"{cost[0]} — the simulator's time is not a kernel cost"
            )
    return out


def _check_filters(
    run_id: int, results: Any, workloads: list[str] | None, versions: list[str] | None
) -> None:
    """Refuse a --workload or --version the run has no results of (an empty table would read "no change")."""
    for option, values, column in (("--workload", workloads, "workload"), ("--version", versions, "version")):
        known = sorted(set(str(v) for v in results[column])) if not results.empty else []
        unknown = [v for v in values or [] if v not in known]
        if unknown:
            raise BenchsvcError(
                f"run {run_id} has no results of {option[2:]} {', '.join(map(repr, unknown))} — give "
                f"{option} one of: {', '.join(known) or 'none: it has no results'}"
            )


def _filtered(
    df: Any, workloads: list[str] | None, versions: list[str] | None, *, keep_baselines: bool = False
) -> Any:
    """Rows of ``workloads`` and ``versions`` (None: all). ``keep_baselines``: results frames keep every
    version, since a version's baseline is needed to compare it."""
    if workloads:
        df = df[df["workload"].isin(workloads)]
    if versions and not keep_baselines:
        df = df[df["version"].isin(versions)]
    return df


def _check_compare_args(run_id: int, results: Any, base: str | None, metrics: list[str] | None) -> None:
    """Refuse a --base the run has no results of, and a --metric that is no metric (an empty table would
    look like "no change")."""
    from benchsvc.engine.counters import COUNTER_NAMES

    if base is not None:
        versions = list(dict.fromkeys(str(v) for v in results["version"]))
        if base not in versions:
            known = ", ".join(versions) if versions else "none: it has no results"
            raise BenchsvcError(
                f"run {run_id} has no results of version {base!r} — give --base one of: {known}"
            )
    known_metrics = ["time", "modeled_ns", *COUNTER_NAMES]
    known_metrics += sorted({c[2:] for c in results.columns if c.startswith("c_")} - set(known_metrics))
    unknown = [m for m in metrics or [] if m not in known_metrics]
    if unknown:
        raise BenchsvcError(
            f"unknown metric {', '.join(map(repr, unknown))} — give --metric one of: {', '.join(known_metrics)}"
        )


def history(
    workload: Annotated[str, typer.Option("--workload", "-w", help="Workload name.")],
    version: Annotated[str, typer.Option("--version", "-V", help="Version id.")],
    metric: Annotated[
        str, typer.Option("--metric", "-m", help="time, modeled_ns or a counter name.")
    ] = "time",
    engine_name: Annotated[
        str | None,
        typer.Option(
            "--engine",
            metavar="ENGINE",
            help="sim or kernel (default: kernel for a kernel-* version, else sim).",
        ),
    ] = None,
    since: SinceOption = None,
    machine: MachineOption = None,
    compare_machines: Annotated[
        bool,
        typer.Option(
            "--compare-machines",
            help="One row per machine instead: the median of its last --last nights of the series and the "
            "ratio to --reference's (machines side by side, never spliced).",
        ),
    ] = False,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", metavar="HOST", help="With --compare-machines: the machine the ratios are to."
        ),
    ] = None,
    last: Annotated[
        int,
        typer.Option(
            "--last",
            help="With --compare-machines: how many recent nights each median is over.",
            callback=int_range("--last", 1, 10_000),
        ),
    ] = 7,
    fmt: FormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """One series across nights, one row per run, with the change points the nightly analysis recorded.

    Timing: the change points and machine events recorded by the nightly analysis (benchsvc run, benchsvc
    analyze), so history and regressions always agree; a night never analysed says so (run benchsvc
    analyze). Counters: exact changes. Rows of different provenance (machine, environment, workload
    content, mode) are separate series. --compare-machines puts each machine's series side by side as a
    ratio to one machine's (default: the first hostname).
    """
    import pandas as pd

    from benchsvc.analysis.describe import machine_event_text
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import machine_ids
    from benchsvc.store.queries import analysed_runs, series_history
    from benchsvc.store.regressions import series_marks

    if engine_name is None:
        engine_name = "kernel" if version.startswith("kernel-") else "sim"
    if compare_machines and machine is not None:
        raise BenchsvcError("--compare-machines shows every machine — leave out --machine")
    if reference is not None and not compare_machines:
        raise BenchsvcError("--reference goes with --compare-machines — add it, or leave out --reference")
    engine = open_db(db, create=False)
    with read_session(engine) as s:
        if machine is not None:
            machine_ids(s, machine)  # an unknown machine is an error, not an empty history
        df = series_history(
            s,
            workload=workload,
            version=version,
            metric=metric,
            engine=engine_name,
            machine=machine,
            since=_date(since, "--since"),
        )
        marks = pd.DataFrame()
        done: set[int] = set()
        if metric == "time" and not df.empty:
            run_ids = [int(r) for r in df["run_id"]]
            marks = series_marks(s, run_ids=run_ids, engine=engine_name, version=version, workload=workload)
            done = analysed_runs(s, run_ids)
    if df.empty:
        raise BenchsvcError(
            f"no {metric} history for {engine_name}/{version}/{workload} (check the names: benchsvc runs, "
            "benchsvc workloads list, benchsvc versions)"
        )
    if compare_machines:
        _render_machine_ratios(df, metric, reference, last, fmt)
        return
    df["series"] = (
        df["machine"]
        + "/"
        + df["environment_fp"].str[:6]
        + "/"
        + df["workload_hash"].str[:6]
        + "/"
        + df["mode"]
    )
    df["change"] = ""
    if metric == "time":
        # exactly what the nightly analysis recorded (benchsvc run, benchsvc analyze): one decision path
        text: dict[int, list[str]] = {}
        for m in marks.to_dict("records"):
            d = m["details"] or {}
            if m["axis"] == "machine":
                line = machine_event_text(m["effect"], d)
            else:
                line = f"{m['effect'] - 1:+.1%} (p={float(d.get('p_value', float('nan'))):.1e})"
            text.setdefault(int(m["run_id"]), []).append(line)
        df["change"] = [
            "; ".join(text.get(int(r), [])) if int(r) in done or int(r) in text else "(not analysed)"
            for r in df["run_id"]
        ]
    else:
        prev = df.groupby("series")["value"].shift()
        moved = prev.notna() & (df["value"] != prev)
        df.loc[moved, "change"] = (df["value"] - prev)[moved].map(lambda d: signed_quantity(d, metric))
    df["commit"] = df["git_commit"].fillna("").str[:10]
    cols = ["run_id", "started_at", "machine", "series", "commit", "value", "change"]
    if fmt is Format.table:
        # one unit per column, by significant digits (a time in s/ms/µs/ns, modelled ns likewise)
        kind = {"time": Kind.seconds, "modeled_ns": Kind.nanoseconds}.get(metric, Kind.integer)
        name = {"time": "mean", "modeled_ns": "modeled"}.get(metric, "value")
        cols[cols.index("value")] = name
        render(df.rename(columns={"value": name}).to_dict("records"), cols, fmt, kinds={name: kind})
        return
    if metric == "time":
        df["value"] = df["value"] * 1e3
        df = df.rename(columns={"value": "mean_ms"})
        cols[cols.index("value")] = "mean_ms"
    render(df.to_dict("records"), cols, fmt)


def _render_machine_ratios(df: Any, metric: str, reference: str | None, last: int, fmt: Format) -> None:
    from benchsvc.analysis.machines import machine_ratios

    hosts = sorted(set(df["machine"]))
    if reference is not None and reference not in hosts:
        raise BenchsvcError(
            f"--reference {reference!r} has no nights of this series — give one of: {', '.join(hosts)}"
        )
    table = machine_ratios(df, last=last, reference=reference)
    table["workload_hash"] = table["workload_hash"].str[:12]
    value = "median"
    kinds = {
        "ratio": Kind.ratio,
        "median": {"time": Kind.seconds, "modeled_ns": Kind.nanoseconds}.get(metric, Kind.integer),
    }
    if metric == "time" and fmt is not Format.table:
        table["median"] = table["median"] * 1e3
        table = table.rename(columns={"median": "median_ms"})
        value = "median_ms"
    if fmt is Format.table:
        table["environment_fp"] = table["environment_fp"].str[:6]
    cols = [
        "workload_hash",
        "mode",
        "machine",
        "environment_fp",
        "nights",
        "last_night",
        value,
        "ratio",
        "reference",
    ]
    render(table.to_dict("records"), cols, fmt, kinds=kinds)


def analyze(
    run_ref: Annotated[
        str | None, typer.Option("--run", help="Analyse this run only (id or uuid prefix).")
    ] = None,
    since: SinceOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Analyse runs that were analysed already (records nothing twice).")
    ] = False,
    db: DbOption = None,
) -> None:
    """Analyse stored runs that no benchsvc run analysed (imported or backfilled), oldest night first.

    The same analysis as at the end of benchsvc run: lineage findings, nightly change points, machine events
    and counter changes. A run already analysed is skipped unless --force; running it twice records nothing
    new.
    """
    from benchsvc.findings import analyze_stored

    if run_ref is not None and since is not None:
        raise BenchsvcError("--run and --since do not go together — give one run or a start date")
    engine = open_db(db, create=False)
    done = analyze_stored(engine, run_ref=run_ref, since=_date(since, "--since"), force=force)
    for run_id, f in done:
        if f is not None and f.analysed_meanwhile:
            typer.echo(f"run {run_id}: analysed meanwhile by another benchsvc; nothing recorded by this one")
    analysed = [(r, f) for r, f in done if f is not None and not f.analysed_meanwhile]
    for run_id, f in analysed:
        typer.echo(
            f"run {run_id}: {f.lineage_new} lineage differences (the versions' character; {f.lineage_fixed} gone), "
            f"{f.nightly_new} new nightly findings, {f.machine_new} machine events"
        )
    typer.echo(
        f"analysed {len(analysed)} runs, skipped {len(done) - len(analysed)} already analysed; "
        "see benchsvc regressions"
    )


regressions_app = typer.Typer(
    help="Regressions and improvements found on both axes; acknowledge them.",
    invoke_without_command=True,
)


@regressions_app.callback()
def regressions(
    ctx: typer.Context,
    since: SinceOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="new (nightly findings to acknowledge), acknowledged, fixed, or character (lineage "
            "differences: what a version is).",
        ),
    ] = None,
    axis: Annotated[
        str | None,
        typer.Option("--axis", help="lineage (within a run), nightly or machine (machine events)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include improvements, not only regressions.")] = False,
    machine: MachineOption = None,
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            "--fail-on-regression",
            help="Exit 2 when a new nightly regression is among those listed (CI gating; lineage differences "
            "and machine events never fail it), or with --lineage-baseline on a new lineage difference.",
        ),
    ] = False,
    lineage_baseline: Annotated[
        str | None,
        typer.Option(
            "--lineage-baseline",
            metavar="RUN",
            help="With --fail-on-regression: also exit 2 when the latest run of the baseline's machine (or "
            "--machine) shows a version worse than its parent where RUN did not (a new lineage difference).",
        ),
    ] = None,
    fmt: FormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """List regressions (with --all, improvements too): both axes, with their effect, interval and machine.

    Status: a nightly finding (a series changed) is new until acknowledged (benchsvc regressions ack) or
    fixed; a lineage finding (a version against its parent in one run) is the version's character: listed,
    not queued for acknowledgement (it can still be acknowledged to attach a note).
    """
    if ctx.invoked_subcommand is not None:
        return
    from benchsvc.analysis.describe import finding_size
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import machine_ids
    from benchsvc.store.regressions import list_regressions

    if lineage_baseline is not None and not fail_on_regression:
        raise BenchsvcError("--lineage-baseline goes with --fail-on-regression — add it")
    engine = open_db(db, create=False)
    with read_session(engine) as s:
        machines = machine_ids(s, machine) if machine is not None else None
        start = _date(since, "--since")
        df = list_regressions(
            s,
            since=start,
            status=status,
            axis=axis,
            direction=None if all_ else "worse",
            machine_ids=machines,
        )
        lineage_new = _lineage_gate(s, lineage_baseline, machine) if lineage_baseline is not None else None
    rows = []
    for r in df.to_dict("records"):
        d = r["details"] or {}
        size = finding_size(d, r["effect"], r["ci_low"], r["ci_high"])
        if d.get("kind") == "counter":
            size += f" (commit {str(d.get('previous_commit') or '')[:8]} -> {str(d.get('commit') or '')[:8]})"
        rows.append(
            {
                **r,
                "against": r["baseline"]
                or ("recent nights" if r["axis"] == "machine" else f"night before run {r['run_id']}"),
                "size": size,
            }
        )
    cols = [
        "id",
        "axis",
        "status",
        "direction",
        "run_id",
        "started_at",
        "machine",
        "workload",
        "version",
        "against",
        "metric",
        "size",
    ]
    if fmt is not Format.table:
        cols += ["effect", "ci_low", "ci_high", "note"]
    elif any(r["note"] for r in rows):
        cols += ["note"]  # why each was acknowledged
    render(rows, cols, fmt)
    if lineage_new is not None:
        baseline_id, latest_id, new = lineage_new
        echo(
            f"lineage of run {latest_id} against baseline run {baseline_id}: {len(new)} new differences"
            + "".join(f"\n  {line}" for line in new),
            err=True,
        )
    if not fail_on_regression:
        return
    # among the findings listed (--since, --machine, --axis, --status narrow the gate too)
    failing = [
        r["id"] for r in rows if r["status"] == "new" and r["direction"] == "worse" and r["axis"] == "nightly"
    ]
    if failing:
        echo(
            f"{len(failing)} new nightly regressions (ids {', '.join(map(str, failing))}) — look at them, then "
            "benchsvc regressions ack ID... --note TEXT",
            err=True,
        )
    if failing or (lineage_new is not None and lineage_new[2]):
        raise typer.Exit(2)


def _lineage_gate(session: Any, baseline_ref: str, machine: str | None) -> tuple[int, int, list[str]]:
    """(baseline run, latest run, one line per new lineage difference) for --lineage-baseline."""
    from benchsvc.findings import new_lineage_differences
    from benchsvc.store.machines import latest_run_id, machine_ids
    from benchsvc.store.queries import get_run

    baseline = get_run(session, baseline_ref)
    ids = machine_ids(session, machine) if machine is not None else [baseline.machine_id]
    latest = get_run(session, latest_run_id(session, ids))
    new = new_lineage_differences(session, latest, baseline)
    lines = [
        f"{r.version} vs {r.baseline} on {r.workload}: {r.metric} {signed_quantity(r.delta, str(r.metric))}"
        for r in new.itertuples(index=False)
    ]
    return baseline.id, latest.id, lines


@regressions_app.command("ack")
def ack(
    regression_ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="[ID]...", help="The regressions' ids (benchsvc regressions); or a filter."),
    ] = None,
    note: Annotated[str, typer.Option("--note", help="Why they are acknowledged (shown in reports).")] = "",
    all_new: Annotated[
        bool, typer.Option("--all-new", help="Every new regression (with the filters below, those of them).")
    ] = False,
    workload: Annotated[
        str | None, typer.Option("--workload", "-w", help="Filter: regressions of this workload.")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", "-V", help="Filter: regressions of this version.")
    ] = None,
    axis: Annotated[str | None, typer.Option("--axis", help="Filter: lineage, nightly or machine.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", "-m", help="Filter: this metric.")] = None,
    db: DbOption = None,
) -> None:
    """Acknowledge regressions: their status becomes 'acknowledged', with your note.

    Give ids (ack 27 28 --note ...), or a filter: --all-new, --workload, --version, --axis, --metric select the
    findings not yet acknowledged or fixed (new, and character with --axis lineage or a workload/version
    filter) that match all of them."""
    from benchsvc.store.db import write_session
    from benchsvc.store.regressions import acknowledge, open_matching

    filters = {"workload": workload, "version": version, "axis": axis, "metric": metric}
    given = {k: v for k, v in filters.items() if v is not None}
    if not note.strip():
        raise BenchsvcError("--note is required — say why (it is shown beside the finding)")
    if regression_ids and (given or all_new):
        raise BenchsvcError("give ids or a filter (--all-new, --workload, ...), not both")
    if not regression_ids and not given and not all_new:
        raise BenchsvcError("nothing to acknowledge — give ids, or a filter such as --all-new or --workload")
    engine = open_db(db, create=False)
    with write_session(engine) as s:
        ids = list(dict.fromkeys(regression_ids or [])) or open_matching(s, only_new=all_new, **given)
        if not ids:
            raise BenchsvcError("no open finding matches those filters — see benchsvc regressions")
        regs = [acknowledge(s, i, note) for i in ids]
    for reg in regs:
        echo(f"regression {reg.id} acknowledged: {reg.metric} of {reg.version_id}")


def _evaluate_series(
    workload: str, version: str, machine: str | None, mode: str | None, seed: int, fmt: Format, db: str | None
) -> None:
    """``evaluate -w W -V V``: the noise and smallest detectable step of each series of W/V (series are never
    spliced: one per machine, environment, workload content and mode)."""
    from benchsvc.analysis import evaluate as ev
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import machine_ids
    from benchsvc.store.queries import series_history

    engine = open_db(db, create=False)
    with read_session(engine) as s:
        if machine is not None:
            machine_ids(s, machine)  # an unknown machine is an error, not an empty answer
        df = series_history(s, workload=workload, version=version, machine=machine, mode=mode)
    if df.empty:
        raise BenchsvcError(
            f"no timing history for {version}/{workload}"
            + (f" on {machine}" if machine else "")
            + (f" in {mode} mode" if mode else "")
            + " — check the names (benchsvc runs, benchsvc versions) and --machine/--mode"
        )
    key = ["machine", "environment_fp", "workload_hash", "mode"]
    groups = list(df.groupby(key, sort=True))
    rows = []
    for i, ((host, env, chash, series_mode), series) in enumerate(groups):
        label = f"{host}/{str(env)[:6]}/{str(chash)[:6]}/{series_mode}"
        row: dict[str, Any] = {"series": label, "machine": host, "mode": series_mode, "nights": len(series)}
        row.update(noise=None, smallest_step=None, note="")
        if len(series) < 5:
            row["note"] = "fewer than 5 nights: too few to estimate the noise"
        else:
            echo(f"[{i + 1}/{len(groups)}] {label}: {len(series)} nights, estimating ...", err=True)
            sigma = ev.estimate_noise(series["value"].to_numpy(float))
            row["noise"] = sigma
            if sigma > 0:
                row["smallest_step"] = ev.smallest_detectable_step(sigma, seed=seed)
            else:
                row["note"] = "no night-to-night noise: any step is found"
        rows.append(row)
    if fmt is Format.table:
        echo(f"{version}/{workload}: {len(groups)} series (never spliced; --machine and --mode pick one)")
        for r in rows:
            for k in ("noise", "smallest_step"):
                r[k] = "" if r[k] is None else f"{r[k]:.2%}" if k == "noise" else f"{r[k]:.1%}"
        render(rows, ["series", "nights", "noise", "smallest_step", "note"], fmt)
        return
    render(rows, ["series", "machine", "mode", "nights", "noise", "smallest_step", "note"], fmt)


def evaluate(
    noise: Annotated[
        float | None,
        typer.Option(
            "--noise",
            help="Night-to-night noise (relative, e.g. 0.015) for one scenario; 0 to 1.",
            callback=float_range("--noise", 0.0, 1.0),
        ),
    ] = None,
    step: Annotated[
        float | None,
        typer.Option(
            "--step",
            help="Injected step (relative, e.g. 0.05); 0 for A/A; more than -1, at most 10.",
            callback=float_range("--step", -1.0, 10.0, low_open=True),
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            help=f"Series per scenario (1 to {MAX_TRIALS}).",
            callback=int_range("--trials", 1, MAX_TRIALS),
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed (0 or more).", callback=int_range("--seed", 0))
    ] = 0,
    classes: Annotated[
        bool,
        typer.Option(
            "--classes",
            help="The noise classes of real machines (machine slow nights, heavy tails, bimodal, drift, "
            "correlated, creeps, weekly seasons, random walks, a wandering machine) instead of the Gaussian "
            "targets.",
        ),
    ] = False,
    workload: Annotated[
        str | None,
        typer.Option("--workload", "-w", help="Estimate the noise of this real series (with --version)."),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", "-V", help="Version of the real series.")
    ] = None,
    machine: Annotated[
        str | None,
        typer.Option(
            "--machine", metavar="HOST", help="With --workload/--version: only this machine's series."
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="With --workload/--version: only the series of this mode.")
    ] = None,
    confirmation: Annotated[
        str,
        typer.Option(
            "--confirmation",
            help="Decision path to score: none (benchsvc analyze, run --no-confirm), levels (benchsvc run: "
            "candidates re-measured, recorded if the re-measurement is nearer the new level than the old), "
            "halfstep (the same with the re-measurement within half the step of tonight's value), or all.",
        ),
    ] = "none",
    fmt: FormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """Measure the change-point detector: false alarms on A/A series and power against injected steps.

    Default: the scenarios of the targets (A/A at 0.5% and 1.5% noise, +5% at 1.5%, +2% at 0.5%); --classes:
    the noise classes of real machines, with machine events per night. With --workload and --version,
    estimate the noise of each stored series of that workload and version (one per machine, environment,
    workload content and mode: never spliced; --machine and --mode pick) and the smallest step detectable
    there within 3 nights. Progress goes to stderr.
    """
    from benchsvc.analysis import evaluate as ev

    if workload is not None or version is not None:
        if workload is None or version is None:
            raise BenchsvcError("--workload and --version go together (the real series to estimate)")
        _evaluate_series(workload, version, machine, mode, seed, fmt, db)
        return
    if machine is not None or mode is not None:
        raise BenchsvcError(
            "--machine and --mode pick a real series — give them with --workload and --version"
        )
    scenarios = list(ev.NOISE_CLASSES) if classes else None
    if noise is not None or step is not None:
        scenarios = [
            ev.Scenario("custom", sigma_night=noise if noise is not None else 0.015, step=step or 0.0)
        ]
    if confirmation == "all":
        paths = list(ev.PATHS)
    elif confirmation in ev.PATHS:
        paths = [confirmation]
    else:
        raise BenchsvcError(
            f"--confirmation {confirmation!r} is not one of {', '.join(ev.PATHS)}, all — pick one of those"
        )
    kwargs: dict[str, Any] = {"seed": seed, "paths": paths}
    if trials is not None:
        kwargs["trials"] = trials

    def progress(i: int, total: int, name: str) -> None:
        typer.echo(
            f"[{i + 1}/{total}] scenario {name} ({kwargs.get('trials', ev.DEFAULT_TRIALS)} series)", err=True
        )

    table = ev.run_evaluation(scenarios, on_scenario=progress, **kwargs)
    if fmt is not Format.table:
        render(table.to_dict("records"), list(table.columns), fmt)
        return
    rows = []
    for r in table.to_dict("records"):
        row = {k: r[k] for k in ev.SUMMARY_COLUMNS}
        for k in ("noise", "step"):
            row[k] = f"{r[k]:.1%}"
        for k in ev.RATES:
            lo, hi = r.get(f"{k}_low"), r.get(f"{k}_high")
            if r[k] != r[k]:  # NaN: not applicable to this scenario
                row[k] = ""
            elif lo is not None and lo == lo:
                digits = 3 if k in ("false_alarm_rate", "machine_event_rate") else 1
                row[k] = f"{r[k]:.{digits}%} [{lo:.{digits}%}, {hi:.{digits}%}]"
            else:
                row[k] = f"{r[k]:.1%}"
        per_creep = r.get("records_per_creep")
        row["records_per_creep"] = (
            ""
            if per_creep is None or per_creep != per_creep
            else f"{per_creep:.2f} (max {r['max_records_per_creep']})"
        )
        rows.append(row)
    render(rows, list(ev.SUMMARY_COLUMNS), fmt)
