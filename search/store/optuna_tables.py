"""Read-only declarations of Optuna's tables, with only the columns lrsearch reads."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import DateTime, Enum, Float, Integer, MetaData, String, Text

# Declared here (not imported from optuna.storages._rdb, which is private) with only the
# columns we read. The Enum types match Optuna's, so PostgreSQL compares native enums.
# Internal to the store package (not re-exported by `search.store`).

_optuna_md = MetaData()
optuna_studies = sa.Table(
    "studies",
    _optuna_md,
    sa.Column("study_id", Integer, primary_key=True),
    sa.Column("study_name", String(512)),
)
optuna_trials = sa.Table(
    "trials",
    _optuna_md,
    sa.Column("trial_id", Integer, primary_key=True),
    sa.Column("number", Integer),
    sa.Column("study_id", Integer),
    sa.Column(
        "state",
        Enum("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING", name="trialstate"),
    ),
    sa.Column("datetime_start", DateTime),
    sa.Column("datetime_complete", DateTime),
)
optuna_values = sa.Table(
    "trial_values",
    _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("objective", Integer),
    sa.Column("value", Float(precision=53)),
    sa.Column("value_type", Enum("FINITE", "INF_POS", "INF_NEG", name="trialvaluetype")),
)
optuna_user_attrs = sa.Table(
    "trial_user_attributes",
    _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("key", String(512)),
    sa.Column("value_json", Text),
)
optuna_study_system_attrs = sa.Table(
    "study_system_attributes",
    _optuna_md,
    sa.Column("study_id", Integer),
    sa.Column("key", String(512)),
    sa.Column("value_json", Text),
)
optuna_system_attrs = sa.Table(
    "trial_system_attributes",
    _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("key", String(512)),
    sa.Column("value_json", Text),
)
optuna_params = sa.Table(
    "trial_params",
    _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("param_name", String(512)),
    sa.Column("param_value", Float(precision=53)),
    sa.Column("distribution_json", Text),
)
optuna_intermediate = sa.Table(
    "trial_intermediate_values",
    _optuna_md,
    sa.Column("trial_id", Integer),
    sa.Column("step", Integer),
    sa.Column("intermediate_value", Float(precision=53)),
    sa.Column(
        "intermediate_value_type",
        Enum("FINITE", "INF_POS", "INF_NEG", "NAN", name="trialintermediatevaluetype"),
    ),
)

optuna_heartbeats = sa.Table(
    "trial_heartbeats",
    _optuna_md,
    sa.Column("trial_heartbeat_id", Integer, primary_key=True),
    sa.Column("trial_id", Integer),
    sa.Column("heartbeat", DateTime),
)
