"""Tenants at run time: tiers, the tenant gate, the limits stage, alerts.

Owns how a key's tier and store overrides become one atomic admission
against the limits backend (``keel.limits``), how budgets are reserved and
settled, the per-replica view of tenants (suspensions within a second), and
budget and anomaly alerts. Reads the store through small protocols; the
pipeline calls it through :class:`Gatekeeper`.
"""

from keel.tenants.admission import Gatekeeper, Held
from keel.tenants.alerts import AnomalyWatch, BudgetAlerts, Event, Notifier, find_anomalies
from keel.tenants.directory import TenantDirectory, TenantPolicy
from keel.tenants.propagate import open_backend, propagate_suspension

__all__ = [
    "AnomalyWatch",
    "BudgetAlerts",
    "Event",
    "Gatekeeper",
    "Held",
    "Notifier",
    "TenantDirectory",
    "TenantPolicy",
    "find_anomalies",
    "open_backend",
    "propagate_suspension",
]
