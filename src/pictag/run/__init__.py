"""The run folder, and the one module that reads and writes it.

A run folder is what training hands to everything after it:

    model.safetensors  the weights (their id in the file's metadata, ``pictag_id``)
    val_outputs.safetensors  the saved model's validation probabilities and targets, which the
                       decision parameters are tuned on (same ``pictag_id``)
    pictag.json        config, heads and label names, each head's decision parameters
                       (thresholds), preprocessing, metrics; ``schema_version``
    splits.csv         image,split of every image the run used (see pictag.data.split_file
                       for its path rule)
    config.resolved.json  the config the run started with, which ``--resume`` reads
    last/              the resumable training state (see pictag.training.checkpoint)
    model.onnx         the exported model, used for prediction on a CPU when up to date
    auto_backend.json  the runtime ``--backend auto`` measured fastest for model.onnx, per
                       machine (see pictag.run.backend_choice)

Everything else gets typed objects from here (:class:`RunInfo`, :class:`LoadedRun`, a
:class:`~pictag.config.Config`, split name -> image paths) and never parses ``pictag.json`` or
``splits.csv`` itself. ``checkpoint_id`` changes whenever the weights or the decision
parameters change, so an export made before a re-tuning is recognised as stale.
"""

from pictag.run.files import (
    RunExistsError,
    claim_run_dir,
    discard_unfinished,
    holds_run,
    read_resume_config,
    read_splits,
    remove_stale_tmp,
    splits_path,
    write_resume_config,
    write_splits,
)
from pictag.run.meta import (
    AUDIT_HTML,
    AUDIT_JSON,
    META_FILE,
    ONNX_FILE,
    RESUME_CONFIG_FILE,
    SCHEMA_VERSION,
    SPLITS_FILE,
    VAL_OUTPUTS_FILE,
    WEIGHTS_FILE,
    RunInfo,
    default_params,
    read_run_info,
    run_meta,
    write_params,
)
from pictag.run.model import (
    LoadedRun,
    ValOutputs,
    build_model,
    load_run,
    read_val_outputs,
    run_onnx_path,
    run_onnx_runner,
    run_openvino_runner,
    save_model,
    stale_reason,
)

__all__ = [
    "AUDIT_HTML",
    "AUDIT_JSON",
    "META_FILE",
    "ONNX_FILE",
    "RESUME_CONFIG_FILE",
    "SCHEMA_VERSION",
    "SPLITS_FILE",
    "VAL_OUTPUTS_FILE",
    "WEIGHTS_FILE",
    "LoadedRun",
    "RunExistsError",
    "RunInfo",
    "ValOutputs",
    "build_model",
    "claim_run_dir",
    "default_params",
    "discard_unfinished",
    "holds_run",
    "load_run",
    "read_resume_config",
    "read_run_info",
    "read_splits",
    "read_val_outputs",
    "remove_stale_tmp",
    "run_meta",
    "run_onnx_path",
    "run_onnx_runner",
    "run_openvino_runner",
    "save_model",
    "splits_path",
    "stale_reason",
    "write_params",
    "write_resume_config",
    "write_splits",
]
