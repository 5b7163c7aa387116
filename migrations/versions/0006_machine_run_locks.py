"""run locks per machine: one active run per host instead of one per database; runs indexed per machine

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:30:00

``run_lock`` held one row for the whole database, so machines sharing a PostgreSQL store ran one at a time.
``run_locks`` holds one row per host (its primary key): the run that host has running, its pid and its
heartbeat. A row of the old table moves to the new one under its holder's host.

``ix_runs_machine_series`` finds one machine's nights of one environment and mode in order, so that a
machine's history (the nightly analysis, the report) does not read the results of every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_locks",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("holder_pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_locks_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_run_locks")),
    )
    op.execute(
        "INSERT INTO run_locks (host, run_id, holder_pid, acquired_at, heartbeat_at) "
        "SELECT holder_host, run_id, holder_pid, acquired_at, heartbeat_at FROM run_lock "
        "WHERE run_id IS NOT NULL"
    )
    op.drop_table("run_lock")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runs_machine_series", ["machine_id", "environment_id", "mode", "started_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_machine_series")
    op.create_table(
        "run_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("holder_pid", sa.Integer(), nullable=False),
        sa.Column("holder_host", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_lock_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_lock")),
    )
    # the old table holds one lock: keep the most recently refreshed one
    op.execute(
        "INSERT INTO run_lock (id, run_id, holder_pid, holder_host, acquired_at, heartbeat_at) "
        "SELECT 1, run_id, holder_pid, host, acquired_at, heartbeat_at FROM run_locks "
        "ORDER BY heartbeat_at DESC LIMIT 1"
    )
    op.drop_table("run_locks")
