"""ray_support: Ray plumbing shared by the adapters (``simulators``, ``serve_apps``,
``tune_configs``): joining the cluster (``cluster.py``), the exported metrics' declarations
and the FLOPs counter (``metrics.py``). The adapters import this; never each other."""
