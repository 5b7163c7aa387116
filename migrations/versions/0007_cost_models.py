"""cost models: the coefficients benchsvc calibrate fitted on a machine's live kernel

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 01:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cost_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("kernel_release", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("suite_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("coefficients", sa.JSON(), nullable=False),
        sa.Column("intervals", sa.JSON(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("holdout_median", sa.Float(), nullable=False),
        sa.Column("holdout_worst", sa.Float(), nullable=False),
        sa.Column("holdout_errors", sa.JSON(), nullable=False),
        sa.Column("benchsvc_version", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_models")),
    )
    op.create_index(op.f("ix_cost_models_hostname"), "cost_models", ["hostname"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cost_models_hostname"), table_name="cost_models")
    op.drop_table("cost_models")
