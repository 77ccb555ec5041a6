"""Sampling to files and checkpoint evaluation (noctcm.generate): tiny untrained models saved in the noctcm/1
checkpoint format, no downloads."""
import copy
import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from noctcm.config import load_config, to_dict
from noctcm.generate import (evaluate_checkpoint, generate, generate_teacher, sample_noise, sample_to_dir,
                             resolve_feature_extractor)
from noctcm.models.consistency_model import build_model, load_model
from noctcm.trigflow import consistency_sampling
from noctcm.utils.helpers import CheckpointError, atomic_save

TINY = ["model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[8]", "model.num_heads=1",
        "model.fno_modes=3", "model.fno_levels=[0,1]", "model.weight_head_channels=8"]


def tiny_cfg(tmp_path, *extra):
    return load_config(overrides=[*TINY, f"data.root={tmp_path / 'data'}", f"paths.prepared={tmp_path / 'prepared'}",
                                  f"evaluation.classifier_checkpoint={tmp_path / 'clf.pt'}", *extra])


def save_ckpt(path, cfg, model, ema_model=None, step=7):
    atomic_save(dict(format="noctcm/1", config=to_dict(cfg), step=step, model=model.state_dict(),
                     ema_model=(ema_model or model).state_dict(), ema={}, optimizer={}, history=[]), path)
    return path


def random_model(cfg, seed, scale=0.05):
    "build_model(cfg) with every parameter perturbed (the untrained U-Net's zero-initialised output gives flat images)."
    torch.manual_seed(seed)
    m = build_model(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    "Checkpoint whose EMA weights differ from the raw weights."
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("ck")
    cfg = tiny_cfg(tmp)
    raw, ema = random_model(cfg, 0), random_model(cfg, 1)
    return save_ckpt(tmp / "ckpt.pt", cfg, raw, ema)


def npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_sample_to_dir_writes_png_and_npz(ckpt, tmp_path):
    info = sample_to_dir(ckpt, tmp_path / "s", num_samples=10, num_steps=2, seed=3, progress=False)
    z = npz(tmp_path / "s" / "samples.npz")
    assert z["images"].shape == (10, 1, 16, 16) and z["images"].dtype == np.uint8
    assert int(z["steps"]) == 2 and int(z["nfe"]) == 2 and int(z["seed"]) == 3 and int(z["resolution"]) == 16
    assert np.allclose(z["t_mid"], [1.1]) and math.isclose(float(z["t_max"]), math.pi / 2)
    assert bool(z["use_ema"]) and not bool(z["teacher"]) and int(z["checkpoint_step"]) == 7
    png = Image.open(tmp_path / "s" / "samples.png")
    assert png.mode == "L" and png.size == (4 * 17 + 1, 3 * 17 + 1)          # ceil(sqrt(10)) = 4 columns, 1 px padding
    assert info["nfe"] == 2 and info["images_per_s"] > 0 and info["npz"].endswith("samples.npz")
    # the grid shows the first images of the npz
    grid = np.asarray(png)
    assert np.array_equal(grid[1:17, 1:17], z["images"][0, 0]) and np.array_equal(grid[1:17, 18:34], z["images"][1, 0])


def test_sampling_is_deterministic_for_a_seed(ckpt, tmp_path):
    a = sample_to_dir(ckpt, tmp_path / "a", num_samples=6, num_steps=2, seed=1, batch_size=6, progress=False)
    b = sample_to_dir(ckpt, tmp_path / "b", num_samples=6, num_steps=2, seed=1, batch_size=4, progress=False)
    c = sample_to_dir(ckpt, tmp_path / "c", num_samples=6, num_steps=2, seed=2, progress=False)
    ia, ib, ic = (npz(i["npz"])["images"] for i in (a, b, c))
    assert np.array_equal(ia, ib)                      # same seed, other batch size: same images
    assert not np.array_equal(ia, ic)                  # other seed: other images
    assert (tmp_path / "a" / "samples.png").read_bytes() == (tmp_path / "b" / "samples.png").read_bytes()


def test_ema_weights_are_the_default(ckpt, tmp_path):
    ema = npz(sample_to_dir(ckpt, tmp_path / "e", num_samples=4, progress=False)["npz"])["images"]
    raw = npz(sample_to_dir(ckpt, tmp_path / "r", num_samples=4, use_ema=False, progress=False)["npz"])["images"]
    assert not np.array_equal(ema, raw)
    m_ema, _ = load_model(ckpt, use_ema=True)
    m_raw, _ = load_model(ckpt, use_ema=False)
    from noctcm.utils.helpers import to_uint8
    assert np.array_equal(to_uint8(generate(m_ema, 4, progress=False)).numpy(), ema)
    assert np.array_equal(to_uint8(generate(m_raw, 4, progress=False)).numpy(), raw)


def test_equal_ema_and_raw_give_equal_samples(tmp_path):
    cfg = tiny_cfg(tmp_path)
    p = save_ckpt(tmp_path / "same.pt", cfg, random_model(cfg, 3))
    a = npz(sample_to_dir(p, tmp_path / "a", num_samples=3, progress=False)["npz"])["images"]
    b = npz(sample_to_dir(p, tmp_path / "b", num_samples=3, use_ema=False, progress=False)["npz"])["images"]
    assert np.array_equal(a, b)


def test_fno_model_samples_at_another_resolution(ckpt, tmp_path):
    info = sample_to_dir(ckpt, tmp_path / "hr", num_samples=3, resolution=32, progress=False)
    z = npz(info["npz"])
    assert z["images"].shape == (3, 1, 32, 32) and int(z["resolution"]) == 32
    assert Image.open(info["png"]).size == (2 * 33 + 1, 2 * 33 + 1)


def test_generate_equals_trigflow_consistency_sampling(ckpt):
    "Second implementation: trigflow.consistency_sampling with a generator seeded like sample i's noise streams."
    from noctcm.generate import _noise_seed
    model, _ = load_model(ckpt)
    x = generate(model, 3, 2, t_mid=[1.0], t_max=1.5, seed=5, progress=False)
    for i in range(3):
        z = sample_noise(5, [i], (1, 16, 16))
        g = torch.Generator().manual_seed(_noise_seed(5, i, 1))     # stage-1 stream
        with torch.no_grad():
            ref = consistency_sampling(model, z, 1.5, [1.0], generator=g, sigma_d=model.sigma_d)
        assert torch.allclose(x[i:i + 1], ref, atol=1e-6)
    # 1-step samples share the first stage with the 2-step ones
    with torch.no_grad():
        first = model(sample_noise(5, range(3), (1, 16, 16)), torch.full((3,), 1.5))
    assert torch.allclose(generate(model, 3, 1, t_max=1.5, seed=5, progress=False), first, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(bs=st.integers(1, 5), start=st.integers(0, 4), n=st.integers(1, 5))
def test_samples_do_not_depend_on_batching(bs, start, n):
    "Sample i of a run is the same whatever the batch size, and a shard [start, start + n) reproduces it."
    model = _shared_model()
    full = generate(model, 9, 2, seed=11, batch_size=9, progress=False)
    part = generate(model, n, 2, seed=11, batch_size=bs, start_index=start, progress=False)
    assert torch.allclose(part, full[start:start + n], atol=1e-6)


_MODEL = {}
def _shared_model():
    if "m" not in _MODEL:
        _MODEL["m"] = random_model(load_config(overrides=[*TINY, "data.resolution=8", "data.resolutions=[8,10]", "model.attention_resolutions=[]"]), 2)
    return _MODEL["m"]


@pytest.mark.parametrize("solver,steps,nfe", [("heun", 18, 35), ("euler", 18, 18), ("heun", 1, 1), ("heun", 4, 7)])
def test_teacher_sampling_reports_nfe(ckpt, tmp_path, solver, steps, nfe):
    info = sample_to_dir(ckpt, tmp_path / "t", num_samples=2, teacher=True, solver=solver, teacher_steps=steps,
                         progress=False)
    z = npz(info["npz"])
    assert info["nfe"] == nfe and int(z["nfe"]) == nfe and bool(z["teacher"]) and str(z["solver"]) == solver
    assert z["images"].shape == (2, 1, 16, 16)


def test_teacher_counts_velocity_calls():
    model = copy.deepcopy(_shared_model())
    calls = []
    orig = model.velocity
    model.velocity = lambda x, t: (calls.append(x.shape[0]), orig(x, t))[1]
    x, nfe = generate_teacher(model, 5, "heun", 18, batch_size=2, progress=False)
    assert nfe == 35 and len(calls) == 3 * 35 and sum(calls) == 5 * 35 and x.shape == (5, 1, 8, 8)


def test_bad_inputs_fail_clearly(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        sample_to_dir(tmp_path / "missing.pt", tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="t_mid"):
        sample_to_dir(ckpt, tmp_path / "o", num_steps=2, t_mid=[1.6], progress=False)
    with pytest.raises(ValueError, match="solver"):
        sample_to_dir(ckpt, tmp_path / "o", teacher=True, solver="rk4", progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        sample_to_dir(ckpt, tmp_path / "o", num_samples=0, progress=False)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------------
# evaluate_checkpoint
# ----------------------------------------------------------------------------------------------------------------

def fake_metrics_module(calls):
    "Stand-in for noctcm.utils.metrics that records its calls (plumbing tests)."
    mod = types.ModuleType("noctcm.utils.metrics")
    def compute_metrics(generated, reference, metrics, feature_extractor, feature_weights, classifier, cache_dir,
                        batch_size, device):
        calls.append(dict(n=len(generated), dtype=generated.dtype, shape=tuple(generated.shape[1:]),
                          n_ref=len(reference), metrics=list(metrics), fe=feature_extractor))
        gap = float((generated.float().mean() - reference.float().mean()).abs())
        return {m: gap + i for i, m in enumerate(metrics)}
    mod.compute_metrics = compute_metrics
    mod.load_classifier = lambda path, map_location="cpu": torch.nn.Linear(1, 1)
    mod.classifier_confidence = lambda images, clf: {"confident_frac": 1.0, "classes_present": len(images) % 7,
                                                     "class_fractions": [0.5, 0.5]}
    return mod


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    "Folder with data/digits (fetched, no download) and ck.pt, a checkpoint whose config points at it."
    from noctcm.data.datasets import fetch
    d = tmp_path_factory.mktemp("digits")
    fetch("digits", root=d / "data")
    cfg = tiny_cfg(d)
    save_ckpt(d / "ck.pt", cfg, random_model(cfg, 0))
    return d


@pytest.fixture()
def digits_ckpt(digits_dir):
    return digits_dir / "ck.pt"


def test_evaluate_checkpoint_plumbing(digits_ckpt, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "noctcm.utils.metrics", fake_metrics_module(calls))
    out = tmp_path / "res" / "metrics.json"
    r = evaluate_checkpoint(digits_ckpt, num_samples=12, num_steps=[1, 2], metrics=["fid", "is", "precision", "recall"],
                            out=out, progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert set(r) == {"1", "2", "real", "meta"}
    for k in ("1", "2"):
        assert {"fid", "is", "precision", "recall", "nfe", "images_per_s", "seconds", "classifier_confident_frac",
                "classifier_classes_present"} <= set(r[k]) and "classifier_class_fractions" not in r[k]
        assert r[k]["nfe"] == int(k) and all(isinstance(v, (int, float)) for v in r[k].values())
        assert r[k]["classifier_confident_frac"] == 1.0 and r[k]["classifier_classes_present"] == 12 % 7
    assert r["real"]["classifier_classes_present"] == 297 % 7
    # generated sets: 12 uint8 images; the reference is the digits train split (1797 - 297); the floor uses the test split
    assert [c["n"] for c in calls] == [12, 12, 297] and all(c["n_ref"] == 1500 for c in calls)
    assert all(c["dtype"] == torch.uint8 and c["shape"] == (1, 16, 16) and c["fe"] == "domain" for c in calls)
    m = r["meta"]
    assert m["feature_extractor"] == "domain" and m["reference_split"] == "train" and m["num_samples"] == 12
    assert m["t_mid"] == {"1": [], "2": [1.1]} and m["checkpoint_step"] == 7 and m["use_ema"] is True


def test_evaluate_defaults_come_from_the_config(digits_ckpt, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "noctcm.utils.metrics", fake_metrics_module(calls))
    cfg = tiny_cfg(digits_ckpt.parent, "evaluation.num_samples=5", "evaluation.steps=[3]", "evaluation.metrics=[fid]")
    r = evaluate_checkpoint(digits_ckpt, config=cfg, real=False, progress=False)
    assert set(r) == {"3", "meta"} and r["3"]["nfe"] == 3 and calls[0]["n"] == 5 and calls[0]["metrics"] == ["fid"]
    # teacher: keys are the ODE step counts
    r = evaluate_checkpoint(digits_ckpt, num_samples=2, teacher=True, metrics=["fid"], real=False, progress=False)
    assert set(r) == {"18", "meta"} and r["18"]["nfe"] == 35 and r["meta"]["solver"] == "heun"


def test_evaluate_rejects_bad_requests(digits_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "noctcm.utils.metrics", fake_metrics_module([]))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_checkpoint(digits_ckpt, num_samples=2, metrics=["fid", "bleu"], progress=False)
    with pytest.raises(ValueError, match="data.name"):
        evaluate_checkpoint(digits_ckpt, num_samples=2, config=tiny_cfg(digits_ckpt.parent, "data.name=cifar10",
                                                                       "data.channels=1"), progress=False)


def test_feature_extractor_auto():
    assert resolve_feature_extractor(load_config(overrides=["data.name=cifar10", "data.channels=3"])) == "inception-v3-compat"
    assert resolve_feature_extractor(load_config()) == "domain"
    assert resolve_feature_extractor(load_config(overrides=["evaluation.feature_extractor=inception-v3-compat"])) \
        == "inception-v3-compat"


def test_evaluate_with_the_real_metrics(digits_ckpt, tmp_path):
    "torch-fidelity through utils.metrics: the JSON equals a direct compute_metrics call; cached reference reused."
    from noctcm.config import dump_config
    from noctcm.data.datasets import load_dataset
    from noctcm.utils.helpers import to_uint8
    from noctcm.utils.metrics import compute_metrics, load_classifier, save_classifier, train_domain_classifier
    cfg = tiny_cfg(digits_ckpt.parent, f"evaluation.classifier_checkpoint={tmp_path / 'clf.pt'}")
    tr, te = load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test")
    clf, _ = train_domain_classifier(tr.images, tr.labels, steps=40, width=8, test_images=te.images,
                                     test_labels=te.labels)
    save_classifier(clf, tmp_path / "clf.pt")
    params = tmp_path / "params.yaml"
    dump_config(cfg, params)                                     # evaluation config given as a params.yaml path
    kw = dict(num_samples=24, num_steps=[1], metrics=["fid", "kid", "precision", "recall"], config=params,
              cache_dir=tmp_path / "cache", progress=False)
    r = evaluate_checkpoint(digits_ckpt, out=tmp_path / "m.json", **kw)
    assert {"fid", "kid_mean", "precision", "recall"} <= set(r["1"]) and r["meta"]["feature_extractor"] == "domain"
    assert r["1"]["fid"] > r["real"]["fid"] > 0                   # untrained samples are far from the data
    model, _ = load_model(digits_ckpt)
    direct = compute_metrics(to_uint8(generate(model, 24, 1, seed=0, progress=False)), tr.images, ["fid"],
                             "domain", classifier=load_classifier(tmp_path / "clf.pt"), device="cpu")
    assert math.isclose(direct["fid"], r["1"]["fid"], rel_tol=1e-6)
    assert any("noctcm-ref" in p.name for p in (tmp_path / "cache").rglob("*"))
    r2 = evaluate_checkpoint(digits_ckpt, **kw)                  # second run reads the cached reference statistics
    assert r2["1"]["fid"] == r["1"]["fid"] and r2["real"]["fid"] == r["real"]["fid"]
