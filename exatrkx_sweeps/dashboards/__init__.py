"""Plotly figures and dashboards, one family for runs and studies.

* :mod:`.run`: figures of one run or several (efficiency against pT and eta);
* :mod:`.study`: figures of a study (sweeps, noise, memory, scaling, Pareto front,
  parallel coordinates; Optuna's own figures of the study storage);
* :mod:`.runs`: a study's runs read from MLflow into pandas;
* :mod:`.page`: HTML pages of figures that draw offline (plotly.js never from a CDN);
* :mod:`.build` and ``python -m exatrkx_sweeps.dashboards STUDY``: a study's page.

Dashboard definitions, one YAML file per study page (its title, its study, its figures
in order), live in ``definitions/``, shown at the top of the repository as
``dashboards/`` beside ``conf/`` and ``studies/``. Rendered pages go under
``dashboards/html/`` (not versioned).
"""
