"""Alembic migrations of the voxtrail schema (a package so that wheels ship env.py)."""
