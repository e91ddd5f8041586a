"""The style of ablate's HTML tables (``ablate table --format html``, the dashboard's page): apart
from ``tables`` so that a page put together from kept parts imports no table code."""

TABLE_CSS = """
table.ablate-table { border-collapse: collapse; font: 14px/1.4 system-ui, sans-serif; margin: 8px 0; }
table.ablate-table caption { font-weight: 600; text-align: left; padding: 4px 0; }
table.ablate-table th, table.ablate-table td { padding: 3px 10px; text-align: center; white-space: nowrap; }
table.ablate-table thead tr:last-child th { border-bottom: 1px solid #333; }
table.ablate-table thead { border-top: 2px solid #333; }
table.ablate-table tbody { border-bottom: 2px solid #333; }
table.ablate-table th.group { border-bottom: 1px solid #999; }
table.ablate-table td:first-child, table.ablate-table th:first-child { text-align: left; }
ol.ablate-notes { font: 12px/1.4 system-ui, sans-serif; color: #444; max-width: 60em; }
"""
