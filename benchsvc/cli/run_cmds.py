"""``benchsvc run``, ``benchsvc runs`` and ``benchsvc show``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from benchsvc.cli.common import DbOption, int_range, noise_line, open_db
from benchsvc.cli.output import Format, Kind, Spread, clean, echo, render, write_json
from benchsvc.errors import BenchsvcError
from benchsvc.runner.blocks import CONFIRM_PROCESSES, SAMPLING, supports_timing_inference
from benchsvc.runner.matrix import CONFIRMING_MODES, MODES

SHOW_COUNTERS = ("rmap_calls", "ds_adds", "ds_lock", "split_deferred", "tlb_flushes", "ptl_acquisitions")


def mode_description(mode: str) -> str:
    """What a mode measures, from the settings the runner uses (``run --help``, docs/running.md's table)."""
    s = SAMPLING[mode]
    text = (
        f"simulated versions: {s.processes} worker processes x {s.values} values x {s.loops} zap calls per "
        f"value ({s.warmups} warmup value{'s' if s.warmups != 1 else ''})"
    )
    if mode in CONFIRMING_MODES:
        text += f", {CONFIRM_PROCESSES[mode]} more processes to confirm a suspected timing change"
    text += f"; kernel engine: pyperf {' '.join(MODES[mode])}"
    if not supports_timing_inference(mode):
        text += "; too few values for timing intervals: no timing interval, timing finding or machine event"
    return text


def run(
    resume_ref: Annotated[
        str | None,
        typer.Argument(metavar="[RUN]", help="With --resume: the run to finish (default: latest)."),
    ] = None,
    workloads: Annotated[
        list[str] | None,
        typer.Option("--workloads", "-w", help="Workload file, directory or shipped name; repeat it."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Only workloads with this tag; repeat for any of several."),
    ] = None,
    versions: Annotated[
        list[str] | None,
        typer.Option("--versions", "-V", help="Version ids (repeat, comma list) or 'all' (default)."),
    ] = None,
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            metavar="ENGINE",
            help="sim (the simulated versions), kernel (the live kernel as version kernel-<uname -r>: "
            "root, Linux >= 6.12, per-size mTHP) or all (both; a kernel that cannot serve is skipped "
            "with a note).",
        ),
    ] = "sim",
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help=f"Quick mode (a smoke test; counters are exact): {mode_description('quick')}."
        ),
    ] = False,
    rigorous: Annotated[
        bool, typer.Option("--rigorous", help=f"Rigorous mode: {mode_description('rigorous')}.")
    ] = False,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help=f"quick, default, rigorous or debug. Default mode: {mode_description('default')}. Debug: "
            f"{mode_description('debug')}.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted run instead of starting one.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait for the machine instead of failing when another benchsvc run holds it (its run lock: "
            "one run per machine; machines sharing a database run at the same time).",
        ),
    ] = False,
    trigger: Annotated[
        str, typer.Option("--trigger", help="Recorded with the run: manual, nightly, ...")
    ] = "manual",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm/--no-confirm",
            help="Measure again, at the end of the run, every cell whose timing looks changed, and record a "
            "timing finding only when the re-measurement agrees (default: on).",
        ),
    ] = True,
    pairing: Annotated[
        str | None,
        typer.Option(
            "--pairing",
            metavar="interleaved|duet",
            help="How the simulated versions are measured: interleaved (every version and the canary in "
            "each worker process, call by call in random order; the default) or duet (each version and its "
            "parent at the same moment on two pinned CPUs, swapped between trials). See "
            "docs/measurement.md.",
        ),
    ] = None,
    log: Annotated[
        bool | None,
        typer.Option(
            "--log/--no-log",
            help="Log the run through Python logging to stderr (start, each result, failures, the end, what "
            "the analysis found), instead of the plain progress lines. Default: on under systemd (the "
            "journal), off elsewhere. See docs/fleet.md.",
            show_default=False,
        ),
    ] = None,
    write_report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write the HTML report when the run ends.")
    ] = True,
    report_dir: Annotated[
        Path,
        typer.Option(
            "--report-dir",
            help="Where the report goes: absent, empty, or a site benchsvc wrote (see report --out).",
        ),
    ] = Path("reports"),
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            "--fail-on-regression",
            help="Exit 2 when the run's analysis records a new nightly regression (CI gating; lineage "
            "differences and machine events do not count).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Measure every version x workload with pyperf and store the results (the nightly job).

    --engine kernel (or all) also measures the live kernel, as version kernel-<uname -r>, on every workload it
    can express: per-size mTHP is set to madvise for the layout's folio size around each such result and
    restored afterwards (also on Ctrl-C). Shipped workloads tagged "large" or "oracle" are left out unless
    --tag names the tag. Each result is committed as it finishes; Ctrl-C marks the run interrupted (exit 130)
    and `benchsvc run --resume` finishes it. Exit 1 when a result failed (recorded with its error; the run
    goes on); with --fail-on-regression, exit 2 when the analysis recorded a new nightly regression.
    """
    from benchsvc.records import RunRecord
    from benchsvc.runner.matrix import (
        MODES,
        InterruptedBeforeStart,
        RunError,
        check_pairing,
        execute,
        plan_engines,
        resume_plan,
        run_settings,
    )

    if quick and rigorous:
        raise RunError("--quick and --rigorous exclude each other")
    chosen = mode or ("quick" if quick else "rigorous" if rigorous else "default")
    if chosen not in MODES:
        raise RunError(f"unknown mode {chosen!r} (one of: {', '.join(MODES)})")
    if resume_ref is not None and not resume:
        raise RunError(f"unexpected argument {resume_ref!r}: a RUN is only taken with --resume")
    if resume and pairing is not None:
        raise RunError("--pairing is not taken with --resume: a run is finished the way it was started")
    if pairing is not None:
        check_pairing(pairing)
    if write_report:  # before anything is measured: a report that cannot be written fails now, not at the end
        from benchsvc.report.publish import check_out_dir

        check_out_dir(report_dir, "--report-dir")
    if resume:
        engine = open_db(db)
        resume_id, record, items, chosen = resume_plan(engine, resume_ref)
        items = _unique_items(items)  # a plan recorded before duplicates were dropped may repeat items
        pairing = record.pyperf_settings.get("measurement")
        if pairing is not None:
            check_pairing(pairing)
    else:
        # every input is checked before the database is opened (and created): a mistake writes nothing
        if engine_name == "kernel" and versions:
            raise RunError(
                "--versions selects simulated versions; --engine kernel runs only the live kernel "
                "(use --engine all to run both)"
            )
        specs = _select_workloads(workloads, tag)
        items, plan_notes = plan_engines(specs, _select_versions(versions, engine_name), engine_name)
        items = _unique_items(items)
        for note in plan_notes:
            typer.echo(f"note: {note}", err=True)
        settings = run_settings(chosen, items, pairing)
        pairing = settings.get("measurement")
        record = RunRecord.new(mode=chosen, trigger=trigger, pyperf_settings=settings)
        resume_id = None
        engine = open_db(db)
    logging_on = _start_logging(log)
    reporter = _Reporter(quiet or (logging_on and not sys.stderr.isatty()))
    try:
        summary = execute(
            engine,
            items,
            record,
            chosen,
            reporter,
            wait=wait,
            resume_run_id=resume_id,
            confirm=confirm,
            pairing=pairing,
        )
    except InterruptedBeforeStart:
        typer.echo("interrupted while waiting for the database: no run was started", err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        reporter.close()
        typer.echo(
            "interrupted: the run is marked interrupted; finish it with benchsvc run --resume", err=True
        )
        raise typer.Exit(130) from None
    reporter.close()
    for note in summary.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"run {summary.run_id} {summary.status}: {summary.ok} ok, {summary.failed} failed"
        + (f", {summary.skipped} already done" if summary.skipped else "")
        + (f" ({summary.failed_before} of them failed)" if summary.failed_before else "")
        + f" in {_clock(summary.elapsed_s)} ({chosen} mode)"
    )
    from benchsvc.findings import plan_run, record_run
    from benchsvc.records import utcnow

    # what the run re-measured decides which timing findings are recorded (None: nothing was re-measured)
    plan = plan_run(engine, summary.run_id, confirmed=summary.confirmed is not None)
    analysed_at = utcnow()
    found = record_run(engine, plan, confirmed=summary.confirmed)
    analysis = (
        f"{found.lineage_new} lineage differences (the versions' character; {found.lineage_fixed} gone), "
        f"{found.nightly_new} new nightly findings, {found.machine_new} machine events"
    )
    typer.echo(f"analysis: {analysis}; see benchsvc regressions")
    _log.log(
        logging.WARNING if found.nightly_new or found.machine_new else logging.INFO,
        "run %d analysed: %s",
        summary.run_id,
        analysis,
    )
    if write_report:
        from benchsvc.records import utcnow
        from benchsvc.report.collect import collect
        from benchsvc.report.site import build_site, write_site
        from benchsvc.store.cost_models import cost_model_for
        from benchsvc.store.db import read_session

        with read_session(engine) as s:
            data = collect(s)
            model = cost_model_for(s, data.latest.run.hostname if data.latest else None)
        written, unchanged = write_site(
            build_site(data, cost_model=model, generated_at=utcnow().replace(microsecond=0)),
            report_dir,
            "--report-dir",
        )
        typer.echo(f"report: {report_dir / 'index.html'} ({written} files written, {unchanged} unchanged)")
        _log.info("report: %s (%d files written)", report_dir / "index.html", written)
    if summary.status == "failed":
        raise typer.Exit(1)
    if fail_on_regression:
        new = _new_nightly_regressions(engine, analysed_at)
        if new:
            typer.echo(
                f"{len(new)} new nightly regressions (ids {', '.join(map(str, new))}) — see benchsvc "
                "regressions --status new",
                err=True,
            )
            raise typer.Exit(2)


def _new_nightly_regressions(engine: Any, since: Any) -> list[int]:
    """Ids of the nightly regressions (worse, status new) recorded at or after ``since``."""
    from benchsvc.store.db import read_session
    from benchsvc.store.regressions import list_regressions

    with read_session(engine) as s:
        df = list_regressions(s, status="new", axis="nightly", direction="worse")
    return [int(i) for i in df[df["detected_at"] >= since]["id"]]


_log = logging.getLogger("benchsvc.run")

#: syslog priorities of the logging levels, as the journal reads them from a ``<N>`` line prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """``<priority>message``: systemd stores each stderr line in the journal at that priority, with its own
    timestamp and unit name."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def _start_logging(enabled: bool | None) -> bool:
    """Send the ``benchsvc`` loggers to stderr when ``enabled`` (None: when systemd runs us, which sets
    ``$JOURNAL_STREAM`` for a service whose stderr is the journal). Returns whether logging is on."""
    import os

    under_systemd = bool(os.environ.get("JOURNAL_STREAM"))
    if not (under_systemd if enabled is None else enabled):
        return False
    handler = logging.StreamHandler(sys.stderr)
    if under_systemd:
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("benchsvc")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return True


def _select_versions(requested: list[str] | None, engine_name: str) -> list[str]:
    """The simulated versions of ``--versions``; a value that names none (``-V ''``, ``-V ,,``) is an error."""
    from benchsvc.engine.versions import resolve_versions, version_ids
    from benchsvc.runner.matrix import RunError

    chosen = resolve_versions(requested)
    if not chosen and engine_name != "kernel":
        given = " ".join(f"-V {v!r}" for v in requested or [])
        raise RunError(
            f"{given} selects no version — give version ids (repeat -V or a comma list: "
            f"{', '.join(version_ids())}) or all"
        )
    return chosen


def _unique_items(items: list[Any]) -> list[Any]:
    """The matrix without repeated items (the same workload given twice, e.g. by name and by file, or a
    directory and a file in it): the first occurrence is kept, in order."""
    seen: set[tuple[str, ...]] = set()
    unique = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    return unique


def _select_workloads(refs: list[str] | None, tags: list[str] | None) -> list[Any]:
    from benchsvc.errors import WorkloadError
    from benchsvc.workload import OPT_IN_TAGS, WorkloadSpec, discover, load_workload, resolve

    specs: list[WorkloadSpec] = []
    if refs:
        for ref in refs:
            if Path(ref).is_dir():
                specs.extend(load_workload(p) for p in discover(ref))
            else:
                specs.append(resolve(ref))
    else:
        specs = [load_workload(p) for p in discover()]
        left_out = set(OPT_IN_TAGS) - set(tags or ())
        specs = [s for s in specs if not left_out & set(s.tags)]
    if tags:
        specs = [s for s in specs if any(t in s.tags for t in tags)]
    if not specs:
        raise WorkloadError("no workload selected (check --workloads and --tag; see benchsvc workloads list)")
    # the same workload given twice (by name and by file, or a directory and a file in it) runs once; two
    # different workloads under one name are refused (results, pages and findings are keyed by the name)
    seen: dict[str, WorkloadSpec] = {}
    unique = []
    for spec in specs:
        first = seen.get(spec.name)
        if first is None:
            seen[spec.name] = spec
            unique.append(spec)
        elif first.content_hash != spec.content_hash:
            raise WorkloadError(
                f"two different workloads are named {spec.name!r}: {first.path or 'shipped ' + spec.name} and "
                f"{spec.path or 'shipped ' + spec.name} (their contents differ) — rename one of the files, or "
                "give only one of them"
            )
    return unique


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class _Reporter:
    """A progress bar with ETA on a terminal; one plain line per result otherwise (cron, logs)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.progress: Any = None
        self.task: Any = None
        self.t0 = time.monotonic()
        #: expected pyperf warnings (EXPECTED_WARNINGS key -> results that had it), summarised at the end
        self.expected: dict[str, int] = {}
        self.results = 0

    def __call__(self, p: Any) -> None:
        if self.quiet:
            return
        if p.event == "confirm":
            what = f"confirming {p.item.spec.name}: measuring {', '.join(p.versions)} again"
            if self.tty and self.progress is not None:
                self.progress.update(self.task, description=what)
            else:
                print(f"[confirm {p.index + 1}/{p.total}] {what}", file=sys.stderr, flush=True)
            return
        if self.tty:
            self._bar(p)
        elif p.event == "done":
            elapsed = time.monotonic() - self.t0
            eta = elapsed / (p.index + 1) * (p.total - p.index - 1)
            r = p.result
            what = _timing(r.values) if r.status == "ok" else f"FAILED: {r.error}"
            unexpected = self._sort_warnings(r.warnings)
            warn = f" (pyperf: {'; '.join(unexpected)})" if unexpected else ""
            print(
                f"[{p.index + 1}/{p.total}] {p.item.label}: {what}{warn}  "
                f"elapsed {_clock(elapsed)}, eta {_clock(eta)}",
                file=sys.stderr,
                flush=True,
            )

    def _bar(self, p: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=p.total)
        if p.event == "start":
            self.progress.update(self.task, description=p.item.label)
        else:
            from rich.text import Text

            unexpected = self._sort_warnings(p.result.warnings)
            if unexpected:
                self.progress.console.print(
                    Text(clean(f"{p.item.label}: pyperf: {'; '.join(unexpected)}")), style="yellow"
                )
            self.progress.advance(self.task)

    def _sort_warnings(self, warnings: Any) -> list[str]:
        """Count the expected pyperf warnings of one result (summarised at the end); return the others."""
        from benchsvc.store.pyperf_adapter import expected_warning

        self.results += 1
        kinds = {w: expected_warning(w) for w in warnings or ()}
        for key in {k for k in kinds.values() if k is not None}:
            self.expected[key] = self.expected.get(key, 0) + 1
        return [w for w, k in kinds.items() if k is None]

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.quiet:
            return
        from benchsvc.store.pyperf_adapter import EXPECTED_WARNINGS

        for key, n in self.expected.items():
            echo(
                f"note: pyperf warned '{key} ...' on {n} of {self.results} results, as the paired design "
                f"expects: {EXPECTED_WARNINGS[key]}",
                err=True,
            )
        self.expected.clear()


def _timing(values: list[float]) -> str:
    import statistics

    if not values:
        return "no values"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean * 1e3:.3f} ms ± {sd * 1e3:.3f}"


def runs(
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", help="How many runs, newest first (0: none).", callback=int_range("--limit", 0)
        ),
    ] = 20,
    machine: Annotated[
        str | None,
        typer.Option(
            "--machine", metavar="HOST", help="Only this machine's runs: hostname or fingerprint prefix."
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """List recent runs of every machine (or --machine): id, start, status, mode, results ok/failed, machine."""
    from benchsvc.store.db import read_session
    from benchsvc.store.machines import machine_ids
    from benchsvc.store.queries import list_runs

    engine = open_db(db, create=False)
    with read_session(engine) as s:
        df = list_runs(s, limit, machine_ids(s, machine) if machine is not None else None)
    rows = df.assign(commit=df["git_commit"].fillna("").str[:10] if fmt is Format.table else df["git_commit"])
    render(
        rows.to_dict("records"),
        ["run_id", "started_at", "status", "mode", "trigger", "ok", "failed", "machine", "commit"],
        fmt,
    )


def show(
    run_ref: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="Run id or uuid prefix (default: latest).")
    ] = None,
    workload: Annotated[
        list[str] | None, typer.Option("--workload", "-w", help="Only this workload; repeat for several.")
    ] = None,
    version: Annotated[
        list[str] | None, typer.Option("--version", "-V", help="Only this version; repeat for several.")
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="Output format (csv: one row per result with every counter; json: the run, its noise floor "
            "and those rows).",
        ),
    ] = Format.table,
    db: DbOption = None,
) -> None:
    """Show one run's results: counters, modelled kernel cost, timing mean ± std dev, unexpected pyperf
    warnings, and the run's noise floor (its v3/v2 A/A intervals and the canary's spread; the canary is not
    listed as a result). pyperf warnings the paired design expects (docs/measurement.md) are summarised once.

    The modelled cost of each simulated version is priced at display time from its stored counters with the
    machine's latest cost model (benchsvc calibrate; the shipped reference model without one), named in the
    header. The simulated engine's time is the simulator's CPU time (sim_cpu_time), not kernel time; the
    kernel engine's is kernel_time."""
    import dataclasses

    from benchsvc.analysis.noise import noise_floor
    from benchsvc.store.cost_models import STORED_PRICE, cost_model_for, reprice
    from benchsvc.store.db import read_session
    from benchsvc.store.pyperf_adapter import EXPECTED_WARNINGS, expected_warning
    from benchsvc.store.queries import CANARY_ENGINE, get_run, run_results, run_samples

    engine = open_db(db, create=False)
    with read_session(engine) as s:
        run = get_run(s, run_ref)
        model = cost_model_for(s, run.machine.hostname)
        df = reprice(run_results(s, run.id), model)
        floor = noise_floor(df, run_samples(s, run.id))
        df = df[df["engine"] != CANARY_ENGINE]
        for option, values, column in (
            ("--workload", workload, "workload"),
            ("--version", version, "version"),
        ):
            unknown = sorted(set(values or []) - set(df[column]))
            if unknown:
                known = ", ".join(sorted(set(df[column]))) or "none: it has no results"
                raise BenchsvcError(
                    f"run {run.id} has no results of {column} {', '.join(map(repr, unknown))} — give "
                    f"{option} one of: {known}"
                )
            if values:
                df = df[df[column].isin(values)]
        info: dict[str, Any] = {
            "id": run.id,
            "uuid": run.uuid,
            "status": run.status,
            "mode": run.mode,
            "trigger": run.trigger,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "machine": run.machine.hostname,
            "benchsvc_version": run.benchsvc_version,
            "git_commit": run.git_commit,
            "timing_intervals": supports_timing_inference(run.mode),
        }
    records = []
    expected: dict[str, int] = {}
    for r in df.to_dict("records"):
        row = {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        warnings = list(r["warnings"] or [])
        for key in {expected_warning(w) for w in warnings} - {None}:
            assert key is not None
            expected[key] = expected.get(key, 0) + 1
        unexpected = [w for w in warnings if expected_warning(w) is None]
        row["warnings"] = len(unexpected)
        row["warning_text"] = "; ".join(warnings)
        row["unexpected_warnings"] = "; ".join(unexpected)
        if fmt is Format.table:
            timing = Spread(row["mean_s"], row["stdev_s"])
            row["sim_cpu_time"] = timing if row["engine"] == "sim" else None
            row["kernel_time"] = timing if row["engine"] == "kernel" else None
            row["cost"] = row["modeled_ns"]
            row.update({c: row.get(f"c_{c}") for c in SHOW_COUNTERS})
        records.append(row)
    if fmt is Format.table:
        echo(
            f"run {run.id} ({info['uuid'][:8]}) {info['status']}, {info['mode']} mode, started "
            f"{info['started_at']:%Y-%m-%d %H:%M} UTC on {info['machine']}, benchsvc "
            f"{info['benchsvc_version']} {(info['git_commit'] or '')[:10]}"
        )
        echo(noise_line(floor, info["mode"], info["timing_intervals"]))
        echo(
            "sim_cpu_time: the simulator's CPU time (Python), not kernel time; kernel_time: the live kernel's; "
            f"cost: modelled kernel cost, priced by the {model.label()}"
        )
        if STORED_PRICE in set(df["priced_by"]):
            echo(f"note: some costs are {STORED_PRICE}")
        cols = [
            "workload",
            "version",
            "status",
            "sim_cpu_time",
            "kernel_time",
            "cost",
            *SHOW_COUNTERS,
            "warnings",
        ]
        kinds = {
            "sim_cpu_time": Kind.seconds,
            "kernel_time": Kind.seconds,
            "cost": Kind.nanoseconds,
            **{c: Kind.integer for c in SHOW_COUNTERS},
        }
        render(records, cols, fmt, kinds=kinds)
        for key, n in expected.items():
            echo(
                f"pyperf warned '{key} ...' on {n} results, as the paired design expects: {EXPECTED_WARNINGS[key]}"
            )
        for r in records:
            if r["unexpected_warnings"]:
                echo(f"pyperf warning on {r['version']}/{r['workload']}: {r['unexpected_warnings']}")
        return
    counter_cols = sorted(c for c in df.columns if c.startswith("c_"))
    cols = [
        "workload",
        "workload_hash",
        "engine",
        "version",
        "parent",
        "status",
        "error",
        "n_values",
        "mean_s",
        "median_s",
        "stdev_s",
        "modeled_ns",
        "priced_by",
        *counter_cols,
        "warning_text",
        "unexpected_warnings",
    ]
    if fmt is Format.json:
        floor_data = dataclasses.asdict(floor) if info["timing_intervals"] else None
        write_json(
            {
                "run": info,
                "noise_floor": floor_data,
                "results": [{c: r.get(c) for c in cols} for r in records],
            }
        )
        return
    render(records, cols, fmt)
