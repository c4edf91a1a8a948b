"""The research harness: experiment grids, their reports, speed tables and the demo.

- :mod:`~structkd.lab.spec`: the typed experiment file and its planned runs.
- :mod:`~structkd.lab.experiment`: runs a grid (``structkd experiment``);
  :mod:`~structkd.lab.grid_runs`: one run's command and the scoring of a finished run.
- :mod:`~structkd.lab.significance`: per-sentence test counts and the paired randomization test.
- :mod:`~structkd.lab.results`: the recorded results as the report reads them;
  :mod:`~structkd.lab.summary`: significance tests and ``summary.json``;
  :mod:`~structkd.lab.report`: the Markdown report (``structkd report``).
- :mod:`~structkd.lab.speed`: prediction speed measured alone (``structkd speed``).
- :mod:`~structkd.lab.demo`: ``structkd demo``.

Nothing here is imported by the library below it (structures, models, training).
"""
