"""ViT autoencoder (paper method 1): a MONAI ViT encoder, optionally CT-pre-trained, and a conv decoder.

Model
- Encoder (`ViTEncoder`): gray [B, 1, S, S] in [0, 1] -> normalised to [-1, 1] -> resized to the ViT
  input size (224 by default) -> 1x1 conv to 3 channels -> `monai.networks.nets.ViT` (patch 16,
  tiny / small / base) -> class token after the final LayerNorm ([B, hidden]).
- The ViT's classification head is replaced by Linear(hidden -> latent) (`ViTAutoencoder.to_latent`);
  the latent (default 512) is the feature space "vit-ae".
- Decoder: Linear(latent -> 256x8x8), then five (transposed conv x2 + residual block) stages up to
  256x256, a 3x3 conv to one channel and Tanh (the [-1, 1] input is the target).

Weights
- `--weights FILE`: pre-trained ViT weights from a local safetensors / weights-only torch file, in timm
  (`patch_embed.proj`, `blocks.N.attn.qkv`, ...), torchvision (`conv_proj`,
  `encoder.layers.encoder_layer_N`, ...) or MONAI / synthleak key layout, mapped onto MONAI's names.
- `--encoder FILE`: a `synthleak pretrain --arch vit` checkpoint (CT pre-training); it overrides
  `--weights` (the pre-training already started from them).

Training (autoencoder, generated images only): MSE, Adam (1e-4, weight decay 1e-5), 10 epochs by
default, mixed precision on CUDA, a resumable `<model>.partial` file after every epoch, the finished
model cached by (config, image content, seed).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cache import cached_array, make_key, model_path
from ..config import MethodConfig, PretrainConfig
from ..data.images import IMAGE_SIZE, ImageSet
from ..errors import CheckpointError, SynthleakError
from ..fsutil import save_training_state
from ..models.checkpoint import file_digest, load_checkpoint, load_into, save_checkpoint
from ..runtime import Progress, log, seed_everything, torch_generator
from .base import EncoderSpec, FeatureExtractor

PATCH = 16
DEFAULT_VIT_INPUT = 224
#: name -> (hidden size, depth, heads); MLP width is 4 x hidden as in ViT-Ti/S/B
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}
DECODER_SEED_SIDE = 8
DECODER_CHANNELS = (256, 128, 64, 32, 16, 8)  # 8 -> 16 -> 32 -> 64 -> 128 -> 256
MODEL_VERSION = 1  # bump when the architecture or training loop changes (invalidates cached models)


def _check_size(vit_size: str) -> tuple[int, int, int]:
    if vit_size not in VIT_SIZES:
        raise SynthleakError(f"--vit-size {vit_size}: unknown size (choose from {', '.join(VIT_SIZES)})")
    return VIT_SIZES[vit_size]


def _check_vit_input(side: int) -> int:
    if side < PATCH or side % PATCH:
        raise SynthleakError(f"--image-size {side}: the ViT input side must be a multiple of {PATCH} (default 224)")
    return side


# --------------------------------------------------------------------------------------------- model
class ViTEncoder(nn.Module):
    """Gray images [B, 1, S, S] in [0, 1] -> ViT class-token features [B, hidden] (`out_dim`)."""

    def __init__(self, vit_size: str = "base", vit_input: int = DEFAULT_VIT_INPUT):
        super().__init__()
        from monai.networks.nets import ViT

        hidden, depth, heads = _check_size(vit_size)
        self.vit_size = vit_size
        self.vit_input = _check_vit_input(vit_input)
        self.out_dim = hidden
        # Gray -> 3 channels, initialised to copy the gray value into each channel so that ImageNet
        # weights see the gray image they expect; it then learns its own mix.
        self.to_rgb = nn.Conv2d(1, 3, kernel_size=1)
        nn.init.constant_(self.to_rgb.weight, 1.0)
        nn.init.zeros_(self.to_rgb.bias)
        # qkv_bias and LayerNorm eps 1e-6 match timm / torchvision ViTs, so their weights give the
        # same function here.
        self.vit = ViT(in_channels=3, img_size=vit_input, patch_size=PATCH, hidden_size=hidden,
                       mlp_dim=4 * hidden, num_layers=depth, num_heads=heads, classification=True,
                       spatial_dims=2, qkv_bias=True, post_activation="none")
        self.vit.classification_head = nn.Identity()  # replaced by the caller's head / latent layer
        for module in self.vit.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = 1e-6
        for block in self.vit.blocks:
            # torch's fused scaled_dot_product_attention: same maths, less memory, faster on GPU.
            block.attn.use_flash_attention = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2.0 - 1.0
        if x.shape[-1] != self.vit_input or x.shape[-2] != self.vit_input:
            x = F.interpolate(x, size=(self.vit_input, self.vit_input), mode="bilinear",
                              align_corners=False, antialias=True)
        features, _ = self.vit(self.to_rgb(x))
        return features


class ResidualBlock(nn.Module):
    """conv3-BN-LeakyReLU(0.1)-conv3-BN plus a 1x1 conv skip, then LeakyReLU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        self.skip = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ViTDecoder(nn.Module):
    """Latent [B, latent] -> image [B, 1, 256, 256] in [-1, 1]."""

    def __init__(self, latent: int, out_side: int = IMAGE_SIZE):
        super().__init__()
        stages = int(round(math.log2(out_side / DECODER_SEED_SIDE)))
        if DECODER_SEED_SIDE * 2**stages != out_side or stages > len(DECODER_CHANNELS) - 1:
            raise SynthleakError(f"decoder output side {out_side} must be 8 x a power of two, at most 256")
        channels = DECODER_CHANNELS[: stages + 1]
        self.seed = nn.Linear(latent, channels[0] * DECODER_SEED_SIDE**2)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.1, inplace=True),
                ResidualBlock(c_out, c_out),
            ]
        layers += [nn.Conv2d(channels[-1], 1, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.seed_channels = channels[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.seed(z).view(-1, self.seed_channels, DECODER_SEED_SIDE, DECODER_SEED_SIDE)
        return self.body(x)


class ViTAutoencoder(nn.Module):
    """ViT encoder + Linear(hidden -> latent) + conv decoder; forward returns (reconstruction, latent)."""

    def __init__(self, vit_size: str = "base", latent: int = 512, vit_input: int = DEFAULT_VIT_INPUT,
                 out_side: int = IMAGE_SIZE):
        super().__init__()
        self.encoder = ViTEncoder(vit_size, vit_input)
        self.to_latent = nn.Linear(self.encoder.out_dim, latent)
        self.decoder = ViTDecoder(latent, out_side)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decoder(z), z


# --------------------------------------------------------------------------- pre-trained weights
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
    from .pretrain import load_pretrained_encoder

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


# ------------------------------------------------------------------------------------ pretraining
def build_pretrain_encoder(cfg: PretrainConfig) -> EncoderSpec:
    """The ViT encoder for `synthleak pretrain --arch vit` (CT classification pre-training).

    Inputs are the audit's 256x256 images (input_size 256); the model resizes them to the ViT input
    (cfg.image_size, default 224) itself, exactly as the autoencoder will.
    """
    vit_input = _check_vit_input(cfg.image_size or DEFAULT_VIT_INPUT)
    encoder = ViTEncoder(cfg.vit_size, vit_input)
    meta = {"arch": "vit", "vit_size": cfg.vit_size, "vit_input": vit_input, "patch": PATCH,
            "out_dim": encoder.out_dim, "init": "random"}
    if cfg.weights:
        layout = load_vit_weights(encoder, cfg.weights)
        meta["init"] = f"{Path(cfg.weights).name} ({layout} layout)"
    return EncoderSpec(encoder=encoder, input_size=IMAGE_SIZE, meta=meta, lr=1e-4, weight_decay=1e-5,
                       step_size=10, gamma=0.9, augment="strong")


# ------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class ViTAESettings:
    """Everything that determines the trained autoencoder (its cache key is built from this)."""

    vit_size: str
    vit_input: int
    latent: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    weights: str | None
    weights_digest: str | None
    encoder: str | None
    encoder_digest: str | None

    @staticmethod
    def from_config(cfg: MethodConfig) -> "ViTAESettings":
        _check_size(cfg.vit_size)
        latent = cfg.option("latent", 512, int)
        if latent < 1:
            raise SynthleakError("--set latent=N: N must be at least 1")
        epochs = 10 if cfg.epochs is None else cfg.epochs
        if epochs < 0:
            raise SynthleakError("--epochs must be at least 0")
        return ViTAESettings(
            vit_size=cfg.vit_size,
            vit_input=_check_vit_input(cfg.image_size or DEFAULT_VIT_INPUT),
            latent=latent,
            epochs=epochs,
            batch_size=cfg.batch_size or 32,
            lr=cfg.option("lr", 1e-4, float),
            weight_decay=cfg.option("weight_decay", 1e-5, float),
            weights=cfg.weights,
            weights_digest=file_digest(cfg.weights),
            encoder=cfg.encoder,
            encoder_digest=file_digest(cfg.encoder),
        )

    def key_parts(self) -> dict:
        """Settings that change the model: file contents count, file names do not."""
        parts = asdict(self)
        parts.pop("weights")
        parts.pop("encoder")
        return {"model": "vit-ae", "version": MODEL_VERSION, **parts}


def build_autoencoder(settings: ViTAESettings, quiet: bool = True) -> tuple[ViTAutoencoder, str]:
    """A fresh autoencoder with its encoder initialised as configured; returns (model, init description)."""
    model = ViTAutoencoder(settings.vit_size, settings.latent, settings.vit_input)
    init = "random"
    if settings.weights:
        layout = load_vit_weights(model.encoder, settings.weights)
        init = f"{Path(settings.weights).name} ({layout} layout)"
    if settings.encoder:
        meta = load_pretrained_vit_encoder(model.encoder, settings.encoder)
        accuracy = meta.get("test_accuracy")
        init = (f"synthleak pretrain checkpoint {Path(settings.encoder).name} (pre-trained on {meta.get('data', '?')}"
                f"{f', test accuracy {accuracy:.3f}' if isinstance(accuracy, float) else ''})")
    log(f"[vit-ae] encoder ViT-{settings.vit_size}/16 at {settings.vit_input}px, init: {init}", quiet)
    return model, init


def _batches(pixels: np.ndarray, order: np.ndarray, batch_size: int, device: str):
    for start in range(0, len(order), batch_size):
        idx = np.sort(order[start:start + batch_size])
        batch = torch.from_numpy(pixels[idx]).to(device=device, dtype=torch.float32)
        yield batch.unsqueeze(1).div_(255.0)


def _autocast(device: str):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op context on CPU."""
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _load_partial(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, quiet: bool) -> tuple[int, list]:
    """Resume from `<model>.partial` (tensors only, weights_only=True); a bad file is ignored."""
    if not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        done = int(state["epoch"])
        losses = [float(x) for x in state["losses"]]
    except Exception as exc:  # a damaged partial file only costs the epochs it held
        log(f"[vit-ae] ignoring unreadable resume file {path} ({str(exc).splitlines()[0][:120]})", quiet)
        return 0, []
    log(f"[vit-ae] resuming after epoch {done} from {path}", quiet)
    return done, losses


def _save_partial(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, losses: list) -> None:
    save_training_state(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "epoch": torch.tensor(epoch), "losses": torch.tensor(losses, dtype=torch.float64)})


def train_autoencoder(model: ViTAutoencoder, images: ImageSet, settings: ViTAESettings, cfg: MethodConfig,
                      partial: Path | None = None) -> list[float]:
    """MSE training on `images`; resumes from / writes `partial` each epoch. Returns per-epoch losses."""
    device = cfg.device
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    start, losses = (0, [])
    if partial is not None:
        start, losses = _load_partial(partial, model, optimizer, cfg.quiet)
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda") and not torch.cuda.is_bf16_supported())
    n = len(images)
    for epoch in range(start, settings.epochs):
        model.train()
        # One generator per epoch: a resumed run shuffles exactly as an uninterrupted one.
        order = torch.randperm(n, generator=torch_generator(cfg.seed * 1000 + epoch)).numpy()
        progress = Progress(f"vit-ae epoch {epoch + 1}/{settings.epochs}", n, cfg.quiet)
        total, seen, t0 = 0.0, 0, time.perf_counter()
        for batch in _batches(images.pixels, order, settings.batch_size, device):
            with _autocast(device):
                recon, _ = model(batch)
                loss = F.mse_loss(recon.float(), batch * 2.0 - 1.0)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            if seen == n or (seen // settings.batch_size) % 10 == 0:
                progress.update(seen, f"loss {total / seen:.5f}")
        losses.append(total / max(seen, 1))
        log(f"[vit-ae] epoch {epoch + 1}/{settings.epochs} loss {losses[-1]:.5f} "
            f"({time.perf_counter() - t0:.1f}s, {seen / max(time.perf_counter() - t0, 1e-9):.1f} images/s)", cfg.quiet)
        if partial is not None:
            _save_partial(partial, model, optimizer, epoch + 1, losses)
    model.eval()
    return losses


def fit_autoencoder(images: ImageSet, cfg: MethodConfig, settings: ViTAESettings
                    ) -> tuple[ViTAutoencoder, str, dict]:
    """Train (or load from the cache) the autoencoder on synthetic `images`.

    Returns (model in eval mode on cfg.device, model key, record of how it was made).
    """
    key = make_key(settings.key_parts(), images.content_key(), cfg.seed)
    path = model_path(cfg.cache_dir, "vit-ae", key)
    model, init = build_autoencoder(settings, cfg.quiet)
    record = {"encoder init": init, "epochs": settings.epochs}
    if path is not None and path.exists():
        state, meta = load_checkpoint(path)
        load_into(model, state, path)
        log(f"[vit-ae] using cached model {path}", cfg.quiet)
        record["losses"] = meta.get("losses")
        return model.to(cfg.device).eval(), key, record
    seed_everything(cfg.seed)
    partial = path.with_name(path.name + ".partial") if path is not None else None
    losses = train_autoencoder(model, images, settings, cfg, partial)
    record["losses"] = losses
    if path is not None:
        save_checkpoint(path, model.state_dict(), {"settings": settings.key_parts(), "losses": losses,
                                                   "images": images.content_key(), "seed": cfg.seed, "init": init})
        partial.unlink(missing_ok=True)
    return model.eval(), key, record


@torch.no_grad()
def encode_images(model: ViTAutoencoder, images: ImageSet, device: str, batch_size: int = 32,
                  quiet: bool = True) -> np.ndarray:
    """[n, latent + 1]: latent features and, in the last column, the per-image reconstruction MSE."""
    model.eval().to(device)
    out = np.empty((len(images), model.to_latent.out_features + 1), dtype=np.float32)
    order = np.arange(len(images))
    progress = Progress("vit-ae encode", len(images), quiet)
    done = 0
    for batch in _batches(images.pixels, order, batch_size, device):
        with _autocast(device):
            recon, z = model(batch)
        err = ((recon.float() - (batch * 2.0 - 1.0)) ** 2).mean(dim=(1, 2, 3))
        out[done:done + len(batch), :-1] = z.float().cpu().numpy()
        out[done:done + len(batch), -1] = err.cpu().numpy()
        done += len(batch)
        if done == len(images) or (done // batch_size) % 20 == 0:
            progress.update(done)
    return out


class ViTAEExtractor(FeatureExtractor):
    """Latent (default 512-d) of the ViT autoencoder trained on the generated images."""

    name = "vit-ae"
    trainable = True
    scale = True

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.settings = ViTAESettings.from_config(cfg)
        self.model: ViTAutoencoder | None = None
        self.model_key: str | None = None
        self.record: dict = {}
        self._encoded: dict[str, np.ndarray] = {}  # in-memory too: works with --cache-dir none

    def fit(self, synthetic: ImageSet) -> "ViTAEExtractor":
        self.model, self.model_key, self.record = fit_autoencoder(synthetic, self.cfg, self.settings)
        self._encoded.clear()
        return self

    def _require_model(self) -> ViTAutoencoder:
        if self.model is None:
            raise SynthleakError("vit-ae: fit() must train the autoencoder before features are extracted")
        return self.model

    def encode(self, images: ImageSet) -> np.ndarray:
        """Latent features and reconstruction error ([n, latent + 1]), cached by content hash."""
        model = self._require_model()
        key = make_key(self.cache_key(), images.content_key())
        if key not in self._encoded:
            self._encoded[key] = cached_array(self.cfg.cache_dir, "features/vit-ae-full", key,
                                              lambda: encode_images(model, images, self.cfg.device,
                                                                    self.settings.batch_size, self.cfg.quiet))
        return self._encoded[key]

    def transform(self, images: ImageSet) -> np.ndarray:
        return np.ascontiguousarray(self.encode(images)[:, :-1], dtype=np.float32)

    def reconstruction_error(self, images: ImageSet) -> np.ndarray:
        """Per-image MSE between the [-1, 1] image and its reconstruction."""
        return self.encode(images)[:, -1].astype(np.float64)

    def feature_names(self) -> list[str]:
        return [f"vit_latent_{i}" for i in range(self.settings.latent)]

    def cache_key(self) -> str:
        # The model key covers settings, training images and seed: the same key = the same weights.
        return make_key(self.name, self._require_model_key())

    def _require_model_key(self) -> str:
        if self.model_key is None:
            raise SynthleakError("vit-ae: fit() must train the autoencoder before features are extracted")
        return self.model_key
