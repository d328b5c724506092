"""What every method of one audit shares, computed once: the labelled view, the CV folds, one embedding per space.

Methods used to rebuild these themselves (the folds in about ten places, the embedding once per method and
again for the verdict); the audit now owns them. Folds depend only on the labelled reals, `--folds` and the
seed; an embedding on its feature space and the settings its extractor reads, so that methods with other
`--set` keys (k, k_real, ...) still share one embedding.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..attacks.knn import NeighbourIndex, SearchLog
from ..config import MethodConfig
from ..data.layout import AuditData
from ..decide import cv_folds
from ..features import feature_space_options
from ..features.embedding import Embedding, embed
from ..runtime import verbosity

#: in-memory synthetic features larger than this are not kept between the methods of an audit (release_large)
RELEASE_ABOVE_BYTES = 512 << 20
#: run settings that never change an embedding (how much is printed, what a method calibrates, where reports go)
_NOT_EMBEDDING = ("quiet", "calibrate", "calibrate_k", "artifacts_dir", "n_folds", "search", "options")


class AuditContext:
    """One audit's data with the folds and embeddings every method and the verdict share."""

    def __init__(self, data: AuditData, cfg: MethodConfig | None = None):
        self.data = data
        self.cfg = cfg or MethodConfig()
        self._folds: dict[tuple[int, int], list] = {}
        self._embeddings: dict[tuple, Embedding] = {}
        #: the `--search` mode and the record of the searches of the method running now (the pipeline starts a
        #: fresh log per method)
        self.searches = SearchLog(self.cfg.search)

    def index(self, database: np.ndarray) -> NeighbourIndex:
        """A neighbour index in the run's search mode, its searches recorded in the current log."""
        return self.searches.index(database)

    @property
    def y(self) -> np.ndarray:
        """Labels of the labelled reals (1 = used), in the order of AuditData.labelled()."""
        return self.data.labelled()[1]

    @property
    def labelled_rate(self) -> float | None:
        """Share of members among the labelled reals (None without labelled reals)."""
        return len(self.data.real_used) / len(self.y) if self.data.has_labelled else None

    def folds(self, cfg: MethodConfig | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The CV folds over the labelled reals that every method and the decision step share (patients kept
        whole when groups are known)."""
        cfg = cfg or self.cfg
        key = (cfg.n_folds, cfg.seed)
        if key not in self._folds:
            self._folds[key] = labelled_folds(self.data, cfg)
        return self._folds[key]

    def embedding(self, cfg: MethodConfig, need_synthetic: bool = True) -> Embedding:
        """The audit's images in cfg.feature_space, embedded once per space and extractor settings."""
        # (with and without the synthetic images apart: a scaled space is z-scored by the synthetic set's
        # statistics when it is embedded, by the reals' when not)
        key = _embedding_key(cfg) + (need_synthetic,)
        if key not in self._embeddings:
            with verbosity(cfg.quiet):
                self._embeddings[key] = embed(self.data, cfg, need_synthetic)
        return self._embeddings[key]

    def cached_embedding(self, cfg: MethodConfig) -> Embedding | None:
        """The embedding with the synthetic images in cfg's space if one was made, else None (nothing computed)."""
        return self._embeddings.get(_embedding_key(cfg) + (True,))

    def release_large(self, max_bytes: int = RELEASE_ABOVE_BYTES) -> None:
        """Forget embeddings whose synthetic features sit in memory and exceed `max_bytes` (a scaled space's
        z-scored copy of millions of rows); memory-mapped stores cost nothing to keep. A later method in that
        space embeds again, from the feature cache."""
        for key, emb in list(self._embeddings.items()):
            syn = emb.synthetic
            if syn is not None and not isinstance(syn, np.memmap) and syn.nbytes > max_bytes:
                del self._embeddings[key]


def _embedding_key(cfg: MethodConfig) -> tuple:
    """What an embedding depends on: the run settings but those in _NOT_EMBEDDING, and the space's own settings
    (read, so that a key set to its default value shares the embedding made without it)."""
    run = tuple((f.name, repr(getattr(cfg, f.name))) for f in fields(cfg) if f.name not in _NOT_EMBEDDING)
    return run + tuple(cls.read(cfg.options) for cls in feature_space_options(cfg.feature_space))


def labelled_folds(data: AuditData, cfg: MethodConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The CV folds over AuditData.labelled() for `--folds` and the seed (an audit computes them once, in its
    context)."""
    return cv_folds(data.labelled()[1], data.labelled_groups(), cfg.n_folds, cfg.seed)


def as_context(data: AuditData | AuditContext, cfg: MethodConfig | None = None) -> AuditContext:
    """The audit context of `data` (a fresh one for bare AuditData: library callers running one method)."""
    return data if isinstance(data, AuditContext) else AuditContext(data, cfg)


__all__ = ["AuditContext", "as_context", "labelled_folds"]
