"""client: talking to a running GreenFlow app from outside Ray (no Ray import): the HTTP
load test that replays requests at a traffic profile. ``loadtest.py`` (the command's
entry: replay a run's requests, write ``loadtest.json``/``.png``), ``config.py``
(``LoadtestConfig``), ``schedule.py`` (what is sent when), ``http.py`` (the open-loop
client), ``records.py`` (one request's outcome), ``document.py`` (the ``loadtest.json``
document), ``table.py`` and ``plot.py`` (Table 5 and Figure 5 analogues)."""
