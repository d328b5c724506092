"""Fingerprint every trainer: a tiny fixed-seed run of each, printing digests of the final weights,
the features / reconstruction errors of a few query images, the loss histories and samples.

Used to check that a refactor of the training code changes nothing (bit-identical outputs):

    PYTHONPATH=<old checkout>/src python benchmarks/trainer_digests.py > old.txt
    PYTHONPATH=src python benchmarks/trainer_digests.py > new.txt && diff old.txt new.txt

Optional arguments pick trainers: resnet convres vit dclgan pretrain rae. CPU, about a minute.
"""
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import synthleak
from synthleak.config import MethodConfig, PretrainConfig
from synthleak.data.images import ImageSet
from synthleak.models.checkpoint import load_checkpoint, state_digest

torch.set_num_threads(1)
print("# synthleak from", synthleak.__file__, file=sys.stderr)
only = set(sys.argv[1:])


def h(x) -> str:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
    return hashlib.sha256(json.dumps(x, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sd_digest(state: dict) -> str:
    m = hashlib.sha256()
    for k, v in sorted(state.items()):
        m.update(k.encode())
        m.update(v.detach().cpu().contiguous().numpy().tobytes())
    return m.hexdigest()[:24]


def images(n, seed=0, side=256):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    pics = [np.clip(120 + 80 * np.sin(xx / rng.uniform(8, 30) + rng.uniform(0, 6)) * (yy > rng.integers(40, 200))
                    + rng.normal(0, 5, (side, side)), 0, 255) for _ in range(n)]
    return ImageSet.from_arrays(np.stack(pics).astype(np.uint8))


def want(name):
    return not only or name in only


tmp = Path(tempfile.mkdtemp())
imgs = images(9)
queries = images(3, seed=7)

if want("resnet"):
    from synthleak.features.resnet_ae import ResNetAEExtractor, train_resnet_ae
    cfg = MethodConfig(image_size=32, epochs=2, batch_size=4, cache_dir=str(tmp / "c1"), seed=3, quiet=True,
                       base_filters=4, options={"latent_dim": "16"})
    model, meta = train_resnet_ae(imgs, cfg)
    ext = ResNetAEExtractor(cfg).fit(imgs)
    print("resnet", state_digest(model), meta["final_l1"], h(ext.transform(queries)),
          h(ext.reconstruction_error(queries)))

if want("convres"):
    from synthleak.features.conv_res_ae import ConvResAEExtractor
    cfg = MethodConfig(image_size=16, epochs=2, batch_size=4, cache_dir=str(tmp / "c2"), seed=3, quiet=True)
    ext = ConvResAEExtractor(cfg).fit(imgs)
    print("convres", state_digest(ext.model), h(ext.history), h(ext.transform(queries)),
          h(ext.reconstruction_error(queries)))

if want("vit"):
    from synthleak.features.vit_ae import ViTAEExtractor
    torch.manual_seed(11)
    cfg = MethodConfig(vit_size="tiny", image_size=32, epochs=2, batch_size=4, cache_dir=str(tmp / "c3"), seed=3,
                       quiet=True, options={"latent": "16"})
    ext = ViTAEExtractor(cfg).fit(images(5))
    print("vit", state_digest(ext.model), h(ext.record["losses"]), h(ext.transform(queries)),
          h(ext.reconstruction_error(queries)))

if want("dclgan"):
    from synthleak.features import dclgan
    s = dclgan.DCLGANSettings(image_size=32, base_filters=4, resnet_blocks=2, batch_size=3, nce_patches=16,
                              nce_dim=16, epochs=2, r1_every=2)
    a = dclgan.to_model_input(images(8, 1).pixels, 32)
    b = dclgan.to_model_input(images(7, 2).pixels, 32)
    tr = dclgan.DCLGANTrainer(s, "cpu", seed=3)
    rec = tr.fit(a, b)
    print("dclgan-trainer", state_digest(tr.model), rec.epochs_done, h(rec.last_losses))
    cfg = MethodConfig(cache_dir=str(tmp / "c4"), quiet=True, seed=1, image_size=32, base_filters=4, batch_size=3,
                       epochs=2, options={"resnet_blocks": "2", "nce_patches": "16"})
    ext = dclgan.CriticExtractor(cfg).fit(images(8, 4))
    print("dclgan-extractor", state_digest(ext.trained.model), h(ext.transform(queries)),
          h(ext.trained.meta["final_losses"]))

if want("pretrain"):
    from PIL import Image

    from synthleak.features.pretrain import run_pretrain
    root = tmp / "classes"
    for k, name in enumerate(("bars", "disc", "square")):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(images(6, seed=10 + k).pixels):
            Image.fromarray(np.clip(img.astype(int) + 60 * k, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    for arch, extra in (("conv-res", dict(image_size=16)), ("vit", dict(image_size=32, vit_size="tiny"))):
        out = tmp / f"{arch}.safetensors"
        res = run_pretrain(PretrainConfig(data=root, arch=arch, out=out, epochs=3, batch_size=5, lr=3e-3, seed=2,
                                          quiet=True, **extra))
        state, meta = load_checkpoint(out)
        hist = [{k: v for k, v in e.items() if k not in ("seconds", "items_per_s")} for e in meta["history"]]
        print(f"pretrain-{arch}", sd_digest(state), meta["best_epoch"], meta["test_accuracy"], h(hist),
              res["final_train_loss"])

if want("rae"):
    from synthleak.bench.generator import RAEGenerator
    gen = RAEGenerator(side=32, latent=8, width=4, seed=4).fit(images(10, 3).pixels, epochs=3,
                                                                           batch_size=4)
    print("rae", state_digest(gen.enc), state_digest(gen.dec), h(gen.sample(6, size=64)))
