"""The runtime: the config (``config``, ``configschema``), the pipeline and its one decider
(``pipeline``), the run directory and a stage's context (``rundir``), one attempt at a stage
(``stage_attempt``), preflight checks, dry-run estimates and the trained-model hand-over."""
