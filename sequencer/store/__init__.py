"""Persistence: SQLAlchemy models, the one module of queries, migrations."""
