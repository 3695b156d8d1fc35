"""The load, soak and benchmark generator: ``tigasepy loadtest`` / ``python -m tigasepy.loadtest``.

A lean XMPP client on bare Twisted (``client.py``) drives the scenarios in
``scenarios.py`` against any XMPP server on this machine; ``runner.py`` spreads them
over worker processes and merges the measurements; ``report.py`` prints the summary
and writes JSON, PNG and HTML. See docs/loadtest.md.
"""
