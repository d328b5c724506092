"""synthleak: was this real image used to train the generator that made these synthetic images?"""
__version__ = "0.1.0"

from .leakage import Verdict, verdict  # noqa: E402  (the dataset-level test: numpy only at import)


def audit(*args, **kwargs):
    """Run an audit (see synthleak.pipeline.run_audit)."""
    from .pipeline import run_audit

    return run_audit(*args, **kwargs)


__all__ = ["Verdict", "__version__", "audit", "verdict"]
