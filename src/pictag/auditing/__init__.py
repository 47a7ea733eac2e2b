"""``pictag audit``: find wrong labels, leaked near-duplicates and outliers in a run's data."""

from pictag.auditing.run_audit import AUDIT_HTML, AUDIT_JSON, audit_run

__all__ = ["AUDIT_HTML", "AUDIT_JSON", "audit_run"]
