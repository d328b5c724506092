"""Pre-trained ViT weights from local files (timm, torchvision or MONAI key layouts) onto `ViTEncoder`.

`load_vit_weights(encoder, path)` maps a safetensors / weights-only torch state dict onto MONAI's
parameter names (position embeddings resampled to the encoder's input grid); a whole
`synthleak pretrain --arch vit` checkpoint loads with `load_pretrained_vit_encoder`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .checkpoint import load_checkpoint, load_into
from .classifier import load_pretrained_encoder
from .vit_ae import PATCH, VIT_SIZES, ViTEncoder

_HEAD_PREFIXES = ("head.", "heads.", "fc_norm.", "classification_head.", "pre_logits.")


def _strip_wrappers(state: dict) -> dict:
    """Drop DataParallel / Lightning wrappers ('module.', 'model.') that commonly prefix every key."""
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def detect_layout(state: dict) -> str:
    """'timm', 'torchvision', 'monai' (MONAI ViT names) or 'synthleak' (a whole ViTEncoder)."""
    keys = set(state)
    if "patch_embed.proj.weight" in keys:
        return "timm"
    if "conv_proj.weight" in keys:
        return "torchvision"
    if "vit.patch_embedding.patch_embeddings.weight" in keys:
        return "synthleak"
    if "patch_embedding.patch_embeddings.weight" in keys:
        return "monai"
    return "unknown"


def _timm_to_monai(state: dict) -> tuple[dict, torch.Tensor | None, torch.Tensor | None, list[str]]:
    out, unused = {}, []
    block_map = {"norm1": "norm1", "norm2": "norm2", "attn.qkv": "attn.qkv", "attn.proj": "attn.out_proj",
                 "mlp.fc1": "mlp.linear1", "mlp.fc2": "mlp.linear2"}
    for key, value in state.items():
        if key in ("cls_token", "pos_embed"):
            continue
        if key.startswith("patch_embed.proj."):
            out["patch_embedding.patch_embeddings." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out[key] = value
        elif key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            name, _, param = rest.rpartition(".")
            if name not in block_map:
                unused.append(key)
                continue
            out[f"blocks.{index}.{block_map[name]}.{param}"] = value
        elif not key.startswith(_HEAD_PREFIXES):
            unused.append(key)
    return out, state.get("cls_token"), state.get("pos_embed"), unused


def _torchvision_to_monai(state: dict) -> tuple[dict, torch.Tensor | None, torch.Tensor | None, list[str]]:
    out, unused = {}, []
    block_map = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.out_proj": "attn.out_proj",
                 "mlp.0": "mlp.linear1", "mlp.3": "mlp.linear2",
                 "mlp.linear_1": "mlp.linear1", "mlp.linear_2": "mlp.linear2"}  # old and new torchvision
    prefix = "encoder.layers.encoder_layer_"
    for key, value in state.items():
        if key in ("class_token", "encoder.pos_embedding"):
            continue
        if key.startswith("conv_proj."):
            out["patch_embedding.patch_embeddings." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("encoder.ln."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            name, _, param = rest.rpartition(".")
            if rest == "self_attention.in_proj_weight":
                out[f"blocks.{index}.attn.qkv.weight"] = value  # [q; k; v] rows, heads inside: as MONAI
            elif rest == "self_attention.in_proj_bias":
                out[f"blocks.{index}.attn.qkv.bias"] = value
            elif name in block_map:
                out[f"blocks.{index}.{block_map[name]}.{param}"] = value
            else:
                unused.append(key)
        elif not key.startswith(_HEAD_PREFIXES):
            unused.append(key)
    return out, state.get("class_token"), state.get("encoder.pos_embedding"), unused


def resample_position_embeddings(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """[1, g*g, d] patch position embeddings -> [1, grid*grid, d] (bicubic, as timm does)."""
    n, dim = pos.shape[1], pos.shape[2]
    old = int(round(math.sqrt(n)))
    if old * old != n:
        raise ValueError(f"{n} position embeddings do not form a square grid")
    if old == grid:
        return pos
    image = pos.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos.dtype)


def _split_class_position(pos: torch.Tensor, n_patches: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """timm / torchvision keep the class token's position in slot 0; MONAI adds none to the class token."""
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"position embeddings have shape {tuple(pos.shape)}, expected [1, n, dim]")
    side = int(round(math.sqrt(pos.shape[1])))
    if side * side == pos.shape[1]:
        return None, pos
    if pos.shape[1] >= 2 and int(round(math.sqrt(pos.shape[1] - 1))) ** 2 == pos.shape[1] - 1:
        return pos[:, :1], pos[:, 1:]
    raise ValueError(f"{pos.shape[1]} position embeddings fit neither n x n patches nor 1 + n x n")


def vit_state_from_file(state: dict, encoder: ViTEncoder, path: str | Path) -> tuple[dict, str]:
    """Map a pre-trained state dict onto `encoder.vit` parameter names; returns (state, layout)."""
    state = _strip_wrappers(dict(state))
    layout = detect_layout(state)
    if layout == "unknown":
        raise CheckpointError(f"{path}: not a ViT state dict in timm, torchvision or MONAI key layout "
                              f"(first keys: {', '.join(list(state)[:3])})")
    if layout == "synthleak":
        return {k[len("vit."):]: v for k, v in state.items() if k.startswith("vit.")}, layout
    if layout == "monai":
        return {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}, layout
    convert = _timm_to_monai if layout == "timm" else _torchvision_to_monai
    mapped, cls_token, pos, unused = convert(state)
    if unused:
        raise CheckpointError(f"{path}: {layout} ViT variant not supported (unexpected key {unused[0]!r})")
    if cls_token is None or pos is None:
        raise CheckpointError(f"{path}: {layout} weights lack the class token or position embeddings")
    grid = encoder.vit_input // PATCH
    try:
        cls_pos, patch_pos = _split_class_position(pos, grid * grid)
        if patch_pos.shape[-1] == encoder.out_dim:
            patch_pos = resample_position_embeddings(patch_pos, grid)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    # timm / torchvision: tokens = [cls, patches] + pos; MONAI: [cls, patches + pos]. Folding the class
    # slot of the position embedding into the class token gives exactly the same network.
    mapped["cls_token"] = cls_token + cls_pos if cls_pos is not None and cls_pos.shape == cls_token.shape else cls_token
    mapped["patch_embedding.position_embeddings"] = patch_pos
    return mapped, layout


def _describe_mismatch(state: dict, encoder: ViTEncoder) -> str | None:
    """A readable reason when the file's ViT has another width or depth than --vit-size."""
    weight = state.get("patch_embedding.patch_embeddings.weight")
    if weight is not None and weight.shape[0] != encoder.out_dim:
        sizes = {h: name for name, (h, _, _) in VIT_SIZES.items()}
        found = sizes.get(int(weight.shape[0]), f"hidden size {weight.shape[0]}")
        return f"file holds a ViT-{found} (hidden size {weight.shape[0]}), --vit-size {encoder.vit_size} expects {encoder.out_dim}"
    if weight is not None and tuple(weight.shape[1:]) != (3, PATCH, PATCH):
        return f"patch embedding has shape {tuple(weight.shape)}, expected [{encoder.out_dim}, 3, {PATCH}, {PATCH}]"
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    if depth and depth != len(encoder.vit.blocks):
        return f"file has {depth} transformer blocks, the model has {len(encoder.vit.blocks)}"
    return None


def load_vit_weights(encoder: ViTEncoder, path: str | Path) -> str:
    """Load local pre-trained ViT weights (timm / torchvision / MONAI layout) into `encoder`; returns layout."""
    state, _ = load_checkpoint(path)
    mapped, layout = vit_state_from_file(state, encoder, path)
    problem = _describe_mismatch(mapped, encoder)
    if problem:
        raise CheckpointError(f"{path}: {layout} weights do not fit the model ({problem})")
    own = encoder.vit.state_dict()
    # MONAI blocks carry an unused cross-attention LayerNorm; keep the model's own values for it.
    for key, value in own.items():
        if ".norm_cross_attn." in key and key not in mapped:
            mapped[key] = value
    for key, value in mapped.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{path}: {layout} weights do not fit the model "
                                  f"({key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)})")
    load_into(encoder.vit, {k: v.float() for k, v in mapped.items()}, path)
    if layout == "synthleak" and "to_rgb.weight" in state:
        load_into(encoder.to_rgb, {"weight": state["to_rgb.weight"], "bias": state["to_rgb.bias"]}, path)
    return layout


def load_pretrained_vit_encoder(encoder: ViTEncoder, path: str | Path) -> dict:
    """Initialise `encoder` from a `synthleak pretrain --arch vit` checkpoint; returns its meta."""
    state, meta = load_pretrained_encoder(path, "vit")
    built = meta.get("encoder_meta") or {}
    size = built.get("vit_size", encoder.vit_size)
    if size != encoder.vit_size:
        raise CheckpointError(f"{path}: encoder was pre-trained as ViT-{size}; run with --vit-size {size}")
    vit_input = int(built.get("vit_input", encoder.vit_input))
    if vit_input != encoder.vit_input:
        raise CheckpointError(f"{path}: encoder was pre-trained with ViT input {vit_input}; run with --image-size {vit_input}")
    load_into(encoder, state, path)
    return meta
