"""Discrepancy metrics, the tolerance policy, reports and the command line."""
from reports.compare import Row, compare
from reports.tolerance import tolerance

__all__ = ["Row", "compare", "tolerance"]
