"""``benchsvc compare``, ``history``, ``regressions`` (and ``regressions ack``), ``evaluate``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from benchsvc.cli.common import DbOption, float_range, int_range, open_db
from benchsvc.cli.output import Format, render
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


def compare(
    run_ref: Annotated[
        str | None, typer.Option("--run", help="Run id or uuid prefix (default: the latest).")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Compare every version with this one instead of its parent.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="time, modeled_ns or a counter; repeat (default: all)."),
    ] = None,
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
    workload and metric.

    Counters and modelled cost: exact differences. Time: a ratio with a 95% interval over worker processes,
    paired trial by trial where the versions were measured interleaved (benchsvc run); significant when it
    excludes 1, the effect is at least 3%, and a confirmation re-measurement (when the run made one) agrees.
    The table is headed by the run's noise floor (its v3/v2 A/A intervals and the canary's spread).
    """
    from benchsvc.analysis.lineage import compare_lineage
    from benchsvc.analysis.noise import noise_floor
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import latest_run_id, machine_ids
    from benchsvc.store.queries import get_run, run_results, run_samples

    if run_ref is not None and machine is not None:
        raise BenchsvcError("--run and --machine do not go together — a run is on one machine: give one")
    engine = open_db(db, create=False)
    with read_session(engine) as s:
        run = get_run(s, latest_run_id(s, machine_ids(s, machine)) if machine is not None else run_ref)
        host = run.machine.hostname
        results, samples = run_results(s, run.id), run_samples(s, run.id)
        _check_compare_args(run.id, results, base, metric)
        df = compare_lineage(results, samples, base=base, metrics=metric)
        floor = noise_floor(results, samples)
    if changed:
        df = df[df["significant"]]
    rows = df.to_dict("records")
    for r in rows:
        r["ratio"] = _num(r["ratio"])
        r["interval"] = (
            ""
            if r["kind"] == "exact" or r["ci_low"] != r["ci_low"]
            else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        )
    cols = [
        "workload",
        "version",
        "baseline",
        "metric",
        "direction",
        "value",
        "baseline_value",
        "delta",
        "ratio",
    ]
    if fmt is Format.table:
        typer.echo(f"run {run.id} on {host}: {len(rows)} {'changes' if changed else 'comparisons'}")
        typer.echo(floor.describe())
        render(rows, [*cols, "interval"], fmt)
    else:
        for r in rows:
            r["machine"] = host
        render(
            rows,
            [*cols, "ci_low", "ci_high", "significant", "kind", "engine", "workload_hash", "machine"],
            fmt,
        )


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


def _num(x: Any) -> Any:
    if isinstance(x, float) and x in (float("inf"), float("-inf")):
        return "inf"
    return x


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
        df.loc[moved, "change"] = (df["value"] - prev)[moved].map(lambda d: f"{d:+,.0f}")
    df["started_at"] = df["started_at"].dt.strftime("%Y-%m-%d %H:%M")
    df["commit"] = df["git_commit"].fillna("").str[:10]
    cols = ["run_id", "started_at", "machine", "series", "commit", "value", "change"]
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
    table["last_night"] = table["last_night"].dt.strftime("%Y-%m-%d %H:%M")
    table["workload_hash"] = table["workload_hash"].str[:12]
    value = "median"
    if metric == "time":
        table["median"] = table["median"] * 1e3
        table = table.rename(columns={"median": "median_ms"})
        value = "median_ms"
    if fmt is Format.table:
        table["ratio"] = [f"{r:.3f}" if r == r else "" for r in table["ratio"]]
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
    render(table.to_dict("records"), cols, fmt)


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
            f"run {run_id}: {f.lineage_new} new lineage findings ({f.lineage_fixed} fixed), "
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
    status: Annotated[str | None, typer.Option("--status", help="new, acknowledged or fixed.")] = None,
    axis: Annotated[
        str | None,
        typer.Option("--axis", help="lineage (within a run), nightly or machine (machine events)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include improvements, not only regressions.")] = False,
    machine: MachineOption = None,
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 2 when there is a new regression (CI gating).")
    ] = False,
    fmt: FormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """List regressions (with --all, improvements too): both axes, with their effect, interval and machine."""
    if ctx.invoked_subcommand is not None:
        return
    from benchsvc.analysis.describe import finding_size
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import machine_ids
    from benchsvc.store.regressions import list_regressions

    engine = open_db(db, create=False)
    with read_session(engine) as s:
        df = list_regressions(
            s,
            since=_date(since, "--since"),
            status=status,
            axis=axis,
            direction=None if all_ else "worse",
            machine_ids=machine_ids(s, machine) if machine is not None else None,
        )
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
                "started_at": r["started_at"].strftime("%Y-%m-%d %H:%M"),
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
    render(rows, cols, fmt)
    if fail_on_regression and any(
        r["status"] == "new" and r["direction"] == "worse" and r["axis"] != "machine" for r in rows
    ):
        raise typer.Exit(2)


@regressions_app.command("ack")
def ack(
    regression_id: Annotated[
        int, typer.Argument(metavar="ID", help="The regression's id (benchsvc regressions).")
    ],
    note: Annotated[str, typer.Option("--note", help="Why it is acknowledged (shown in reports).")],
    db: DbOption = None,
) -> None:
    """Acknowledge a regression: its status becomes 'acknowledged', with your note."""
    from benchsvc.store.db import write_session
    from benchsvc.store.regressions import acknowledge

    engine = open_db(db, create=False)
    with write_session(engine) as s:
        reg = acknowledge(s, regression_id, note)
        typer.echo(f"regression {reg.id} acknowledged: {reg.metric} of {reg.version_id}")


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
            "correlated) instead of the Gaussian targets.",
        ),
    ] = False,
    workload: Annotated[
        str | None,
        typer.Option("--workload", "-w", help="Estimate the noise of this real series (with --version)."),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", "-V", help="Version of the real series.")
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
    the noise classes of real machines, with machine events per night. With --workload and --version, estimate the noise of that stored series and the smallest step detectable
    there within 3 nights.
    """
    from benchsvc.analysis import evaluate as ev

    if workload is not None or version is not None:
        if workload is None or version is None:
            raise BenchsvcError("--workload and --version go together (the real series to estimate)")
        from benchsvc.store.db import read_session
        from benchsvc.store.queries import series_history

        engine = open_db(db, create=False)
        with read_session(engine) as s:
            df = series_history(s, workload=workload, version=version)
        if len(df) < 5:
            raise BenchsvcError(
                f"{version}/{workload} has {len(df)} nights; at least 5 are needed to estimate noise"
            )
        sigma = ev.estimate_noise(df["value"].to_numpy(float))
        smallest = ev.smallest_detectable_step(sigma, seed=seed)
        typer.echo(f"{version}/{workload}: {len(df)} nights, night-to-night noise {sigma:.2%}")
        typer.echo(f"smallest step found within 3 nights in >= 90% of trials: {smallest:.1%}")
        return
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
    table = ev.run_evaluation(scenarios, **kwargs)
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
        rows.append(row)
    render(rows, list(ev.SUMMARY_COLUMNS), fmt)
