"""http-chain workload: Flask frontend -> Flask backend -> SQLite, under gunicorn."""
