"""The ``speed`` command line: ``main`` (run, status, models) and ``eval_commands`` (eval, report,
cost, scaling, compare). Heavy imports stay inside each command."""
