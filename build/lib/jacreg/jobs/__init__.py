"""Background jobs: training (or a long robustness run) as a subprocess running the CLI.

Every job owns one run folder ``runs/<id>/`` (created with an exclusive ``mkdir``, so two users or
two jobs never share it)::

    runs/<id>/config.json          what was asked for (kind, config, name, argv)
    runs/<id>/status.json          state, pid, process start time, return code, times (atomic writes)
    runs/<id>/events.jsonl         the CLI's JSON-lines events (start, step, epoch, checkpoint, done, error)
    runs/<id>/model.safetensors    the checkpoint, rewritten atomically every epoch
    runs/<id>/log.txt              the subprocess's stdout and stderr

Nothing here imports Streamlit; the app polls these files. Example::

    job = start_job({"arch": "lenet", "dataset": "mnist-5k", "epochs": 2, "jr": 0.01})
    job.status()["state"]        # "running"
    job.progress()               # step, total, fraction, ETA, last epoch metrics
    stop_job(job.id); resume_job(job.id)
"""

from __future__ import annotations

from .control import (
    config_dict,
    delete_job,
    delete_run,
    get_job,
    list_jobs,
    resume_job,
    start_job,
    stop_job,
    train_argv,
    validate_train_config,
)
from .folders import (
    CONFIG_FILE,
    EVENTS_FILE,
    LOCK_FILE,
    LOG_FILE,
    MODEL_FILE,
    RESULT_FILE,
    STATUS_FILE,
    new_run_dir,
)
from .history import Progress, epoch_history, progress_from_events, regularizer_label, step_history
from .job import ACTIVE_STATES, FINAL_STATES, KINDS, QUEUED_TIMEOUT_S, Job, Kind, State
from .process import pid_alive
from .results import record_robustness, robustness_path, robustness_results

__all__ = [
    "ACTIVE_STATES",
    "CONFIG_FILE",
    "EVENTS_FILE",
    "FINAL_STATES",
    "KINDS",
    "LOCK_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "QUEUED_TIMEOUT_S",
    "RESULT_FILE",
    "STATUS_FILE",
    "Job",
    "Kind",
    "Progress",
    "State",
    "config_dict",
    "delete_job",
    "delete_run",
    "epoch_history",
    "get_job",
    "list_jobs",
    "new_run_dir",
    "pid_alive",
    "progress_from_events",
    "record_robustness",
    "regularizer_label",
    "resume_job",
    "robustness_path",
    "robustness_results",
    "start_job",
    "step_history",
    "stop_job",
    "train_argv",
    "validate_train_config",
]
