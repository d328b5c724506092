"""cache.cached_model: the one "load the cached model, else train it" step of every trained feature space."""
from __future__ import annotations

from synthleak.cache import cached_model
from synthleak.errors import CheckpointError


def test_a_cached_model_is_loaded_and_not_trained(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    trained = []
    got = cached_model(path, lambda p: ("loaded", p.read_bytes()), lambda: trained.append(1) or "trained", "x")
    assert got == ("loaded", b"weights") and not trained


def test_a_damaged_cache_entry_is_retrained_never_trusted(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"garbage")

    def load(p):
        raise CheckpointError(f"{p}: not a safetensors file")

    assert cached_model(path, load, lambda: "trained", "vit-ae") == "trained"
    assert "[vit-ae] retraining:" in capsys.readouterr().err


def test_no_cache_or_no_entry_trains(tmp_path):
    never = lambda p: (_ for _ in ()).throw(AssertionError("nothing to load"))
    assert cached_model(None, never, lambda: "trained", "x") == "trained"
    assert cached_model(tmp_path / "absent", never, lambda: "trained", "x") == "trained"
