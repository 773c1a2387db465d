"""The web backend (the Flask app is in app.py; server.py runs it under waitress).

This package's own import stays free of Flask: `smartpop serve` imports smartpop.web.server at
start, and Flask, Jinja and Werkzeug (about 9 MB of the daemon's RSS under Python 3.8) load only
when the first web request arrives (server.LazyApp).
"""
