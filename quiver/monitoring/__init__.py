"""Monitoring: freshness against the SLA, completeness, drift, training/serving
skew, alerts on transitions, history and an HTML report.

``FeatureStore.monitor`` and ``quiver monitor`` are the doors; ``Monitor`` in
``runner`` runs the checks, ``results`` keeps them in the registry.
"""
