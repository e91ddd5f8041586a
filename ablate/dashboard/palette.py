"""The trial statuses in the order the page lists them, and their colours: shared by the figures
and the page's header (a page whose studies all come from the cache builds no figure)."""

from __future__ import annotations

from ablate.store_reads import COMPLETED, FAILED, INTERRUPTED, PENDING, RUNNING

STATUSES = (COMPLETED, RUNNING, PENDING, INTERRUPTED, FAILED)
STATUS_COLORS = {COMPLETED: "#2ca02c", RUNNING: "#1f77b4", PENDING: "#c7c7c7", INTERRUPTED: "#ff9800",
                 FAILED: "#d62728"}
