"""Analyses of a run: cost (ledger), report (Markdown + HTML), scaling law, generator comparison."""
