"""client: talking to a running GreenFlow app from outside Ray (no Ray import):
``loadtest.py``, the HTTP load test that replays requests at a traffic profile."""
