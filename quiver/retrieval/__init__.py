"""Read paths above the backends: training sets (historical) and feature vectors (online)."""
