"""Hotline's database: SQLAlchemy models, Alembic migrations and the `Store` facade."""

from hotline.store.call_views import (
    BusinessStats,
    CallDirection,
    CallPage,
    CallQuery,
    CallView,
    GreetingLatency,
    InvalidCursor,
    Recording,
    ToolCall,
)
from hotline.store.database import FINAL_STATUSES, Store, StoredKey, StoredMessage
from hotline.store.urls import mask_url, normalise_database_url

__all__ = [
    "FINAL_STATUSES", "BusinessStats", "CallDirection", "CallPage", "CallQuery", "CallView",
    "GreetingLatency", "InvalidCursor", "Recording", "Store", "StoredKey", "StoredMessage",
    "ToolCall", "mask_url", "normalise_database_url",
]
