"""gunicorn entry point: ``gunicorn wsgi:app`` (settings from REGIO_* environment variables).

Each web process also runs the reconciler, which settles runs whose worker died.
"""

from app import create_app, reconciler

app = create_app()
reconciler.start_reconciler_thread(app)
