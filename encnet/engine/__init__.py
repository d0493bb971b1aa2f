"""The engine: a config in, a run folder out.

``config`` (typed YAML) → ``build`` (dataset, model, loss, metric, optimizer for a config) → ``train`` /
``evaluate`` (one process per device under torchrun; ``distributed``, ``schedules``, ``inference``; the trainer's
``loader``, ``rng``, ``preemption`` and ``progress``, what a person watching a run sees) → ``runs`` (the run
folder: atomic writes, checkpoints, env, metrics.jsonl; ``runlock`` keeps one writer).
``published_weights``, ``protocols`` and ``evaluate_published`` evaluate checkpoints made elsewhere.
Nothing here imports ``encnet.report``, ``encnet.analysis`` or ``encnet.experiments``.
"""
