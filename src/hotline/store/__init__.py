"""Hotline's database: SQLAlchemy models, Alembic migrations and the `Store` facade."""

from hotline.store.database import FINAL_STATUSES, Store, StoredKey, StoredMessage
from hotline.store.urls import mask_url, normalise_database_url

__all__ = [
    "FINAL_STATUSES", "Store", "StoredKey", "StoredMessage", "mask_url", "normalise_database_url",
]
