"""ViT autoencoder: shapes, pre-trained weight layouts, refusal of unsafe files, resumable training."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthleak.config import MethodConfig, PretrainConfig
from synthleak.data.images import ImageSet
from synthleak.errors import CheckpointError, SynthleakError
from synthleak.features import get_extractor
from synthleak.features.vit_ae import (
    VIT_SIZES,
    ViTAESettings,
    ViTAutoencoder,
    ViTEncoder,
    build_pretrain_encoder,
    load_vit_weights,
    train_autoencoder,
)
from synthleak.models.checkpoint import save_checkpoint


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_autoencoder_shapes(size):
    torch.manual_seed(0)
    model = ViTAutoencoder(size, latent=64).eval()
    with torch.no_grad():
        recon, z = model(torch.rand(2, 1, 256, 256))
    assert recon.shape == (2, 1, 256, 256) and z.shape == (2, 64)
    assert recon.abs().max() <= 1.0  # Tanh output, compared with inputs scaled to [-1, 1]
    assert model.encoder.out_dim == VIT_SIZES[size][0]
    assert model.encoder.vit.patch_embedding.position_embeddings.shape[1] == 196  # 224 / 16 = 14 x 14


def test_base_forward_once():
    model = ViTEncoder("base").eval()
    assert sum(p.numel() for p in model.vit.parameters()) > 85e6  # ViT-B/16 size
    with torch.no_grad():
        out = model(torch.rand(1, 1, 256, 256))
    assert out.shape == (1, 768) and torch.isfinite(out).all()


def test_bad_size_and_input_are_clear_errors():
    with pytest.raises(SynthleakError, match="--vit-size huge"):
        ViTEncoder("huge")
    with pytest.raises(SynthleakError, match="multiple of 16"):
        ViTEncoder("tiny", vit_input=100)


# ------------------------------------------------------------------------- key layouts (synthetic)
def _monai_parts(encoder: ViTEncoder):
    state = {k: v.clone() for k, v in encoder.vit.state_dict().items()}
    depth = len(encoder.vit.blocks)
    return state, depth


def to_timm(encoder: ViTEncoder, cls_pos: torch.Tensor) -> dict:
    """The encoder's weights renamed to timm's VisionTransformer layout (class slot in pos_embed)."""
    s, depth = _monai_parts(encoder)
    out = {"cls_token": s["cls_token"] - cls_pos,
           "pos_embed": torch.cat([cls_pos, s["patch_embedding.position_embeddings"]], 1),
           "patch_embed.proj.weight": s["patch_embedding.patch_embeddings.weight"],
           "patch_embed.proj.bias": s["patch_embedding.patch_embeddings.bias"],
           "norm.weight": s["norm.weight"], "norm.bias": s["norm.bias"],
           "head.weight": torch.randn(1000, encoder.out_dim), "head.bias": torch.zeros(1000)}
    names = {"norm1": "norm1", "norm2": "norm2", "attn.qkv": "attn.qkv", "attn.out_proj": "attn.proj",
             "mlp.linear1": "mlp.fc1", "mlp.linear2": "mlp.fc2"}
    for i in range(depth):
        for mine, theirs in names.items():
            for p in ("weight", "bias"):
                out[f"blocks.{i}.{theirs}.{p}"] = s[f"blocks.{i}.{mine}.{p}"]
    return out


def to_torchvision(encoder: ViTEncoder, cls_pos: torch.Tensor) -> dict:
    """The encoder's weights renamed to torchvision's VisionTransformer layout."""
    s, depth = _monai_parts(encoder)
    out = {"class_token": s["cls_token"] - cls_pos,
           "encoder.pos_embedding": torch.cat([cls_pos, s["patch_embedding.position_embeddings"]], 1),
           "conv_proj.weight": s["patch_embedding.patch_embeddings.weight"],
           "conv_proj.bias": s["patch_embedding.patch_embeddings.bias"],
           "encoder.ln.weight": s["norm.weight"], "encoder.ln.bias": s["norm.bias"],
           "heads.head.weight": torch.randn(1000, encoder.out_dim), "heads.head.bias": torch.zeros(1000)}
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.out_proj": "self_attention.out_proj",
             "mlp.linear1": "mlp.0", "mlp.linear2": "mlp.3"}
    for i in range(depth):
        pre = f"encoder.layers.encoder_layer_{i}."
        for mine, theirs in names.items():
            for p in ("weight", "bias"):
                out[pre + f"{theirs}.{p}"] = s[f"blocks.{i}.{mine}.{p}"]
        out[pre + "self_attention.in_proj_weight"] = s[f"blocks.{i}.attn.qkv.weight"]
        out[pre + "self_attention.in_proj_bias"] = s[f"blocks.{i}.attn.qkv.bias"]
    return out


def timm_reference_forward(state: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    """timm's ViT computation written out from its own weights (independent of MONAI's code)."""
    x = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x], 1) + state["pos_embed"]
    dim = x.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        p = lambda name: state[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        b, n, _ = h.shape
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(b, n, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) / math.sqrt(dim // heads)).softmax(-1)
        h = (att @ v).transpose(1, 2).reshape(b, n, dim)
        x = x + F.linear(h, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        x = x + h
    return F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]


def torchvision_reference_forward(state: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    """torchvision's ViT computation from its own weights, with torch's MultiheadAttention kernel."""
    x = F.conv2d(images, state["conv_proj.weight"], state["conv_proj.bias"], stride=16).flatten(2).transpose(1, 2)
    x = torch.cat([state["class_token"].expand(len(x), -1, -1), x], 1) + state["encoder.pos_embedding"]
    dim = x.shape[-1]
    layer = 0
    while f"encoder.layers.encoder_layer_{layer}.ln_1.weight" in state:
        p = lambda name: state[f"encoder.layers.encoder_layer_{layer}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (dim,), p("ln_1.weight"), p("ln_1.bias"), eps=1e-6).transpose(0, 1)
        h, _ = F.multi_head_attention_forward(
            h, h, h, dim, heads, p("self_attention.in_proj_weight"), p("self_attention.in_proj_bias"),
            None, None, False, 0.0, p("self_attention.out_proj.weight"), p("self_attention.out_proj.bias"),
            need_weights=False)
        x = x + h.transpose(0, 1)
        h = F.layer_norm(x, (dim,), p("ln_2.weight"), p("ln_2.bias"), eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.0.weight"), p("mlp.0.bias"))), p("mlp.3.weight"), p("mlp.3.bias"))
        layer += 1
    return F.layer_norm(x, (dim,), state["encoder.ln.weight"], state["encoder.ln.bias"], eps=1e-6)[:, 0]


@pytest.mark.parametrize("layout,convert,reference,suffix", [
    ("timm", to_timm, timm_reference_forward, ".safetensors"),
    ("torchvision", to_torchvision, torchvision_reference_forward, ".pth"),
])
def test_weights_in_each_layout_load_and_compute_the_same_network(tmp_path, layout, convert, reference, suffix):
    torch.manual_seed(0)
    source = ViTEncoder("tiny", vit_input=64)
    cls_pos = torch.randn(1, 1, source.out_dim) * 0.1
    state = convert(source, cls_pos)
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_checkpoint(path, state, {})
    else:
        torch.save({"model": state}, path)  # a common wrapper; plain tensors, loadable weights_only

    torch.manual_seed(1)
    target = ViTEncoder("tiny", vit_input=64).eval()
    assert not torch.allclose(target.vit.blocks[0].attn.qkv.weight, source.vit.blocks[0].attn.qkv.weight)
    assert load_vit_weights(target, path) == layout
    for key, value in source.vit.state_dict().items():
        assert torch.allclose(target.vit.state_dict()[key], value, atol=1e-6), key

    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ours = target(images)
        rgb = target.to_rgb(images * 2 - 1)  # the reference sees the same 3-channel input
        theirs = reference(state, rgb, heads=VIT_SIZES["tiny"][2])
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_timm_weights_resample_position_embeddings_to_another_input(tmp_path):
    source = ViTEncoder("tiny", vit_input=64)  # 4 x 4 patches
    path = tmp_path / "timm.safetensors"
    save_checkpoint(path, to_timm(source, torch.zeros(1, 1, source.out_dim)), {})
    target = ViTEncoder("tiny", vit_input=32)  # 2 x 2 patches
    load_vit_weights(target, path)
    assert target.vit.patch_embedding.position_embeddings.shape == (1, 4, source.out_dim)


def test_mismatched_weights_are_a_clear_one_line_error(tmp_path):
    small = ViTEncoder("small", vit_input=32)
    path = tmp_path / "small.safetensors"
    save_checkpoint(path, to_timm(small, torch.zeros(1, 1, small.out_dim)), {})
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(ViTEncoder("tiny", vit_input=32), path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "ViT-small" in msg and "--vit-size tiny" in msg

    other = tmp_path / "resnet.safetensors"
    save_checkpoint(other, {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, {})
    with pytest.raises(CheckpointError, match="not a ViT state dict"):
        load_vit_weights(ViTEncoder("tiny", vit_input=32), other)


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(1), "payload": _Hostile(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_vit_weights(ViTEncoder("tiny", vit_input=32), path)
    assert not marker.exists()
    # The same file given as --weights to the extractor fails before any training.
    cfg = MethodConfig(vit_size="tiny", weights=str(path), cache_dir="none", quiet=True)
    extractor = get_extractor("vit-ae", cfg)
    with pytest.raises(CheckpointError):
        extractor.fit(ImageSet.from_arrays(np.zeros((2, 256, 256), np.uint8)))
    assert not marker.exists()


def test_pretrain_builder_honours_size_and_weights(tmp_path):
    source = ViTEncoder("tiny", vit_input=32)
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, to_timm(source, torch.zeros(1, 1, source.out_dim)), {})
    spec = build_pretrain_encoder(PretrainConfig(data=tmp_path, arch="vit", out=tmp_path / "o", vit_size="tiny",
                                                 image_size=32, weights=str(path)))
    assert spec.encoder.out_dim == 192 and spec.input_size == 256
    assert (spec.lr, spec.weight_decay, spec.step_size, spec.gamma, spec.augment) == (1e-4, 1e-5, 10, 0.9, "strong")
    assert spec.meta["vit_size"] == "tiny" and "timm" in spec.meta["init"]
    assert torch.equal(spec.encoder.vit.norm.weight, source.vit.norm.weight)
    with torch.no_grad():
        assert spec.encoder(torch.rand(2, 1, 256, 256)).shape == (2, 192)


# ------------------------------------------------------------------------------ training
def _images(n: int, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    pics = [np.clip(120 + 80 * np.sin(xx / rng.uniform(8, 30) + rng.uniform(0, 6)) * (yy > rng.integers(40, 200))
                    + rng.normal(0, 5, (256, 256)), 0, 255) for _ in range(n)]
    return ImageSet.from_arrays(np.stack(pics).astype(np.uint8))


def _cfg(**kw) -> MethodConfig:
    base = dict(vit_size="tiny", image_size=32, epochs=2, batch_size=4, cache_dir="none", quiet=True,
                options={"latent": "32"})
    base.update(kw)
    return MethodConfig(**base)


def test_training_resumes_exactly_after_an_interruption(tmp_path):
    images = _images(4)
    cfg = _cfg(batch_size=2)
    full_settings = ViTAESettings.from_config(cfg)
    torch.manual_seed(0)
    uninterrupted = ViTAutoencoder("tiny", 32, 32)
    losses = train_autoencoder(uninterrupted, images, full_settings, cfg)
    assert len(losses) == 2 and all(np.isfinite(losses))

    partial = tmp_path / "model.partial"
    torch.manual_seed(0)
    first = ViTAutoencoder("tiny", 32, 32)
    train_autoencoder(first, images, ViTAESettings.from_config(_cfg(epochs=1, batch_size=2)), cfg, partial)
    assert partial.exists()
    resumed = ViTAutoencoder("tiny", 32, 32)  # different init: everything must come from the file
    resumed_losses = train_autoencoder(resumed, images, full_settings, cfg, partial)
    assert resumed_losses == pytest.approx(losses)
    for (k, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_extractor_trains_caches_and_reuses_model(tmp_path, monkeypatch):
    images, queries = _images(8), _images(3, seed=5)
    cfg = _cfg(epochs=1, cache_dir=str(tmp_path / "cache"))
    first = get_extractor("vit-ae", cfg).fit(images)
    feats = first.extract(queries)
    errors = first.reconstruction_error(queries)
    assert feats.shape == (3, 32) and feats.dtype == np.float32 and errors.shape == (3,) and (errors > 0).all()
    assert list((tmp_path / "cache" / "models" / "vit-ae").glob("*.safetensors"))

    import synthleak.features.vit_ae as vit_ae

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been reused")

    monkeypatch.setattr(vit_ae, "train_autoencoder", no_training)
    second = get_extractor("vit-ae", cfg).fit(images)
    assert second.cache_key() == first.cache_key()
    assert np.allclose(second.transform(queries), feats, atol=1e-5)
    other = get_extractor("vit-ae", _cfg(epochs=1, seed=1, cache_dir="none"))
    monkeypatch.undo()
    other.fit(images)
    assert other.cache_key() != first.cache_key()
