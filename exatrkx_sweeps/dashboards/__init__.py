"""Plotly figures and dashboards, one family for runs and studies.

* :mod:`.run`: figures of one run (efficiency against pT and eta), logged with it;
* :mod:`.study`: figures of a study (Optuna's history, importances, parallel
  coordinates, Pareto front), logged with its parent run.

Dashboard definitions, one YAML file per study page (its title, its study, its figures
in order), live in ``definitions/``, shown at the top of the repository as
``dashboards/`` beside ``conf/`` and ``studies/``. Rendered pages go under
``dashboards/html/`` (not versioned).
"""
