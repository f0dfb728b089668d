"""Code shared by the API and the worker: settings, database, queue and domain services."""
