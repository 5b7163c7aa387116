"""Calibrated cost models in the database (table ``cost_models``; docs/cost-model.md#stored-models).

``benchsvc calibrate`` stores one row per calibration (:func:`save`). Everything that prices a simulated
version asks :func:`cost_model_for` for the machine's latest model; without one it gets the shipped
reference model (``CostModel.default()``, kind ``"reference"``). A calibrated model fitted on another kernel
release than the one running now is returned flagged stale (:func:`is_stale`; its ``label()`` says so).
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from benchsvc.engine.cost import CostModel
from benchsvc.store.models import CostModelRow

if TYPE_CHECKING:
    from benchsvc.calibration import Calibration


def release_key(release: str) -> tuple[int, ...]:
    """The numeric parts of a kernel release (``6.18.44-fc-v1374`` -> (6, 18, 44, 1374)), for ordering."""
    return tuple(int(x) for x in re.findall(r"\d+", release))


def is_stale(fitted_on: str, running: str | None = None) -> bool:
    """True when a model fitted on kernel ``fitted_on`` is not for the kernel running now (``uname -r``):
    an older release, or another build of the same numbers. A model from a *newer* kernel than the running
    one (a machine booted back) is stale too: it was not measured on this kernel."""
    return fitted_on != (running or os.uname().release)


def save(session: Session, cal: Calibration) -> CostModelRow:
    """Store a calibration (the caller commits)."""
    from benchsvc import __version__

    f = cal.fit
    row = CostModelRow(
        hostname=cal.hostname,
        kernel_release=cal.kernel_release,
        created_at=cal.created_at,
        suite_hash=cal.suite_hash,
        version=cal.version,
        coefficients=dict(f.coefficients),
        intervals={k: list(v) for k, v in f.intervals.items()},
        quality={
            **f.quality(),
            "merged": {k: list(v) for k, v in f.groups.items()},
            "unexercised": list(f.unexercised),
            "rounds": max((len(v) for v in cal.measurements.times_ns.values()), default=0),
            "seconds": cal.measurements.seconds,
            "load": cal.load,
            "not_reproduced": dict(cal.measurements.failures),
        },
        holdout_median=f.holdout_median,
        holdout_worst=f.holdout_worst,
        holdout_errors=dict(f.holdout_errors),
        benchsvc_version=__version__,
    )
    session.add(row)
    session.flush()
    return row


def to_cost_model(row: CostModelRow, running: str | None = None) -> CostModel:
    """The stored row as a :class:`CostModel` (kind ``"calibrated"``), flagged stale when ``running`` (the
    kernel release the machine runs now) is given and differs from the one it was fitted on."""
    provenance = {
        "machine": row.hostname,
        "kernel": row.kernel_release,
        "date": row.created_at.strftime("%Y-%m-%d %H:%M"),
        "suite": row.suite_hash,
        "version": row.version,
        "id": str(row.id),
    }
    if running is not None and is_stale(row.kernel_release, running):
        provenance["stale"] = "yes"
        provenance["running_kernel"] = running
    coefficients: dict[str, Any] = dict(row.coefficients)
    return CostModel(
        coefficients={k: float(v) for k, v in coefficients.items()},
        source=f"calibrated on {row.hostname}",
        kind="calibrated",
        holdout_median=row.holdout_median,
        holdout_worst=row.holdout_worst,
        provenance=provenance,
    )


def latest_row(session: Session, hostname: str | None = None) -> CostModelRow | None:
    """The latest calibration of ``hostname`` (default: this machine), or None."""
    host = hostname or socket.gethostname()
    return session.scalar(
        select(CostModelRow)
        .where(CostModelRow.hostname == host)
        .order_by(CostModelRow.created_at.desc(), CostModelRow.id.desc())
        .limit(1)
    )


def cost_model_for(session: Session, hostname: str | None = None) -> CostModel:
    """The latest calibrated model of ``hostname`` (default: this machine), flagged stale when it was fitted
    on another kernel than the one running now (checked for this machine only); ``CostModel.default()`` (the reference) when there is none."""
    row = latest_row(session, hostname)
    if row is None:
        return CostModel.default()
    # only this machine's running kernel is known here; another host's model is taken as stored
    here = hostname is None or hostname == socket.gethostname()
    return to_cost_model(row, os.uname().release if here else None)


def list_rows(session: Session, hostname: str | None = None) -> list[CostModelRow]:
    """Every stored calibration (of ``hostname`` when given), newest first."""
    q = select(CostModelRow).order_by(CostModelRow.created_at.desc(), CostModelRow.id.desc())
    if hostname:
        q = q.where(CostModelRow.hostname == hostname)
    return list(session.scalars(q))


#: ``priced_by`` of a simulated result whose stored counters lack one the model prices (recorded before the
#: counter existed): its ``modeled_ns`` stays the one stored at run time, with the reference coefficients
STORED_PRICE = "stored at run time (reference model; the run predates counters this model prices)"


def reprice(df: pd.DataFrame, model: CostModel) -> pd.DataFrame:
    """``df`` (rows of results with ``engine``, ``modeled_ns`` and ``c_<counter>`` columns) with the
    ``modeled_ns`` of every simulated result recomputed from its stored counters with ``model``, and a
    ``priced_by`` column naming the model (``model.label()``; :data:`STORED_PRICE` where the stored counters
    cannot be re-priced; empty for kernel and canary rows, which have no modelled cost)."""
    out = df.copy()
    if out.empty:
        out["priced_by"] = []
        return out
    priced = [name for name, ns in model.coefficients.items() if ns]
    sim = out["engine"] == "sim"
    label = model.label()
    values: list[Any] = []
    by: list[str] = []
    for is_sim, (_, row) in zip(sim, out.iterrows(), strict=True):
        if not is_sim:
            values.append(row.get("modeled_ns"))
            by.append("")
            continue
        counts = [row.get(f"c_{name}") for name in priced]
        if any(c is None or pd.isna(c) for c in counts):
            values.append(row.get("modeled_ns"))
            by.append(STORED_PRICE)
            continue
        values.append(float(sum(model.coefficients[n] * int(c) for n, c in zip(priced, counts, strict=True))))
        by.append(label)
    out["modeled_ns"] = pd.array(values, dtype="Float64").astype(float)
    out["priced_by"] = by
    return out
