"""Domain storage shared by the API and the workers: our tables, engines, migrations, and
read-only SQL views of Optuna's own tables (which live in the same database).

Our tables are prefixed `lrsearch_` and our Alembic history uses its own version table,
because Optuna already owns `studies` and `alembic_version` in that database.
Every study operation here is one SQL statement, so it is atomic on SQLite and PostgreSQL.
Callers use `from search import store` and `store.<name>`; the modules split it by concern:

- `schema`: our tables, column types, statuses, the UTC clock;
- `engines`: engines, Optuna's storage, migrations, transient errors and their retry;
- `budget`: a study's trial slots as workers claim, give back and close them;
- `catalog`: tenants, studies and datasets as the API lists them;
- `optuna_tables`, `trials`: Optuna's tables, read-only (progress, pages, the best trial);
- `trial_counts`: the answer cache's version, service metrics, what the sweep heals;
- `work`: what a worker reads to choose its work (claimable and active studies, a status);
- `queue_depth`: the work waiting and running, for metrics and autoscalers (KEDA);
- `best`: the study's best (the best mean over seeds once candidates were re-run);
- `workers`: the workers' liveness rows (what each live worker can run, and on what);
- `cancelled`: a cancelled study's waiting trials, failed;
- `limits`: the per-tenant rate and quota checks all API processes share (under a lock).

Outside this list (imported by module): `trial_writes` (a trial's batched writes) and
`optuna_private` (the only module that touches Optuna's private names).
"""

from __future__ import annotations

from search.store.best import LR_RANGE, Best, best_trial, best_value
from search.store.budget import (
    SLOT_RELEASED,
    claim_slot,
    claim_slots,
    close_budget,
    finish_study,
    reclaim_slots,
    release_slot,
    runnable_studies,
)
from search.store.cancelled import fail_waiting_trials
from search.store.catalog import (
    active_studies_using,
    active_studies_using_model,
    count_active_studies,
    count_datasets,
    count_models,
    get_dataset,
    get_model,
    get_or_create_tenant,
    get_study,
    list_datasets,
    list_models,
    list_studies,
)
from search.store.engines import (
    ALEMBIC_VERSION_TABLE,
    DIALECT_INSERTS,
    MIGRATIONS_DIR,
    READ_INDEXES,
    SQLITE_TIMEOUT_S,
    alembic_config,
    at_head,
    current_revision,
    head_revision,
    is_transient,
    make_engine,
    normalise_url,
    optuna_storage,
    retry_transient,
    session_factory,
    upgrade,
)
from search.store.limits import RATE_WINDOW_S, lock_tenant, take_rate_slot
from search.store.queue_depth import (
    queue_depth,
    runnable_trial_slots,
    runnable_trial_slots_sql,
    runnable_trial_slots_stmt,
)
from search.store.schema import (
    FINAL,
    OPTUNA_STATES,
    RUNNABLE,
    STUDY_STATUSES,
    ApiToken,
    Base,
    JsonType,
    RateEvent,
    StoredDataset,
    StoredModel,
    Study,
    StudyStatus,
    Tenant,
    UTCDateTime,
    WorkerRow,
    as_utc,
    new_id,
    utcnow,
)
from search.store.trial_counts import (
    TrialsVersion,
    has_retry,
    orphan_running_trials,
    running_trial_counts,
    study_status_counts,
    study_with_trials_version,
    trial_state_counts,
)
from search.store.trials import (
    Progress,
    StoredTrial,
    ValueCursor,
    get_trial,
    study_progress,
    study_system_attr,
    trials_page,
    value_cursor,
)
from search.store.work import (
    CANDIDATES_READ,
    Claimable,
    active_studies,
    claimable_studies,
    study_status,
)
from search.store.workers import (
    LiveWorker,
    count_live_workers,
    live_workers,
    offered_plugins,
    register_worker,
    remove_worker,
    touch_worker,
)

__all__ = [
    "ALEMBIC_VERSION_TABLE",
    "CANDIDATES_READ",
    "DIALECT_INSERTS",
    "FINAL",
    "LR_RANGE",
    "MIGRATIONS_DIR",
    "OPTUNA_STATES",
    "RATE_WINDOW_S",
    "READ_INDEXES",
    "RUNNABLE",
    "SLOT_RELEASED",
    "SQLITE_TIMEOUT_S",
    "STUDY_STATUSES",
    "ApiToken",
    "Base",
    "Best",
    "Claimable",
    "JsonType",
    "LiveWorker",
    "Progress",
    "RateEvent",
    "StoredDataset",
    "StoredModel",
    "StoredTrial",
    "Study",
    "StudyStatus",
    "Tenant",
    "TrialsVersion",
    "UTCDateTime",
    "ValueCursor",
    "WorkerRow",
    "active_studies",
    "active_studies_using",
    "active_studies_using_model",
    "alembic_config",
    "as_utc",
    "at_head",
    "best_trial",
    "best_value",
    "claim_slot",
    "claim_slots",
    "claimable_studies",
    "close_budget",
    "count_active_studies",
    "count_datasets",
    "count_live_workers",
    "count_models",
    "current_revision",
    "fail_waiting_trials",
    "finish_study",
    "get_dataset",
    "get_model",
    "get_or_create_tenant",
    "get_study",
    "get_trial",
    "has_retry",
    "head_revision",
    "is_transient",
    "list_datasets",
    "list_models",
    "list_studies",
    "live_workers",
    "lock_tenant",
    "make_engine",
    "new_id",
    "normalise_url",
    "offered_plugins",
    "optuna_storage",
    "orphan_running_trials",
    "queue_depth",
    "reclaim_slots",
    "register_worker",
    "release_slot",
    "remove_worker",
    "retry_transient",
    "runnable_studies",
    "runnable_trial_slots",
    "runnable_trial_slots_sql",
    "runnable_trial_slots_stmt",
    "running_trial_counts",
    "session_factory",
    "study_progress",
    "study_status",
    "study_status_counts",
    "study_system_attr",
    "study_with_trials_version",
    "take_rate_slot",
    "touch_worker",
    "trial_state_counts",
    "trials_page",
    "upgrade",
    "utcnow",
    "value_cursor",
]
