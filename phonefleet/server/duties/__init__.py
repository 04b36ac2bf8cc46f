"""Maintenance duties, one small service each (River's layout): its own interval, a bounded ``run_once``
that returns how much it did, and a test of its own. ``maintenance.Maintenance`` runs them on the leader."""
