"""A Celery app whose tasks report to taskevents, and a web process that shows them
live: see README.md."""
