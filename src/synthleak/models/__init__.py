"""Networks (one per file), the one training engine every trainer runs through, and safe checkpoint I/O.

Nothing here imports from `synthleak.features`: features/ adapts these models to the feature
extractor interface, never the other way round.
"""
