"""per-process metadata of raw values

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:00:00

Each worker process's metadata (when it ran, on which CPUs, its place in the interleaved measurement, whether it
is a confirmation re-measurement) is kept beside its raw values, so pairing and interleaving can be checked and
used from what is stored. Older rows have none (NULL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("meta", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_column("meta")
