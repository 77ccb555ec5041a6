"""Tests of noctcm.utils.metrics (nbs/13_metrics.ipynb): torch-fidelity metrics with the domain classifier.
Nothing downloads: the Inception path is only exercised offline (clear error)."""
import os
import time
import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

from noctcm.data.datasets import fetch, load_dataset
import noctcm.utils.metrics as M
from noctcm.utils.metrics import (MetricsError, classifier_confidence, classifier_fingerprint, compute_metrics,
                                  load_classifier, reference_cache_name, save_classifier, train_domain_classifier)


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    fetch('digits', root)
    cfg = {'name': 'digits', 'root': str(root), 'resolution': 16, 'channels': 1}
    return load_dataset(cfg, 'train'), load_dataset(cfg, 'test')


@pytest.fixture(scope='module')
def clf(digits):
    tr, te = digits
    torch.set_num_threads(1)
    model, acc = train_domain_classifier(tr.images, tr.labels, steps=300, seed=0, test_images=te.images,
                                         test_labels=te.labels)
    assert acc > 0.93, acc
    return model


@pytest.fixture(scope='module')
def noise(digits):
    return torch.randint(0, 256, digits[1].images.shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_fd_self_zero_and_ordering(digits, clf, noise):
    tr, te = digits
    assert abs(compute_metrics(te.images, te.images, metrics=('fid',), classifier=clf)['fid']) < 1e-6
    real = compute_metrics(te.images, tr.images, metrics=('fid', 'kid'), classifier=clf)
    fake = compute_metrics(noise, tr.images, metrics=('fid', 'kid'), classifier=clf)
    assert 0 < real['fid'] < 0.1 * fake['fid']
    assert real['kid_mean'] < fake['kid_mean']
    # a corrupted copy of the test set (blurred/shifted) lands in between
    shifted = torch.roll(te.images, shifts=3, dims=-1)
    mid = compute_metrics(shifted, tr.images, metrics=('fid',), classifier=clf)['fid']
    assert real['fid'] < mid < fake['fid']


def test_fd_matches_second_implementation(digits, clf):
    tr, te = digits
    with torch.no_grad():
        a, b = clf.features(te.images).double().numpy(), clf.features(tr.images[:600]).double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', linalg.LinAlgWarning)   # singular 128-d covariance (dead ReLU units)
        covmean = linalg.sqrtm(s1 @ s2)
    fd = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    got = compute_metrics(te.images, tr.images[:600], metrics=('fd',), classifier=clf)['fid']
    assert abs(got - fd) < 1e-3 * max(1.0, abs(fd))


def test_is_real_vs_noise(digits, clf, noise):
    te = digits[1]
    real = compute_metrics(te.images, None, metrics=('is',), classifier=clf)
    fake = compute_metrics(noise, None, metrics=('is',), classifier=clf)
    assert 8.5 < real['is_mean'] <= 10.0 + 1e-9      # 10 classes, nearly balanced, confident
    assert 1.0 <= fake['is_mean'] < 2.5
    # second implementation, one split: exp(E KL(p(y|x) || p(y)))
    with torch.no_grad():
        p = clf(te.images).double().softmax(1)
    ref = torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean()).item()
    assert abs(ref - real['is_mean']) < 1e-6


def test_precision_recall(digits, clf, noise):
    tr, te = digits
    real = compute_metrics(te.images, tr.images, metrics=('precision', 'recall'), classifier=clf)
    fake = compute_metrics(noise, tr.images, metrics=('precision', 'recall'), classifier=clf)
    assert real['precision'] > 0.7 and real['recall'] > 0.7
    assert fake['precision'] < 0.1
    # mode collapse: one image repeated -> precision stays, recall collapses
    one = te.images[:1].repeat(len(te.images), 1, 1, 1)
    coll = compute_metrics(one, tr.images, metrics=('precision', 'recall'), classifier=clf)
    assert coll['recall'] < 0.05


def test_classifier_save_load_and_path(digits, clf, tmp_path):
    te = digits[1]
    p = save_classifier(clf, tmp_path / 'c' / 'clf.pt', data_sha256='abc')
    c2 = load_classifier(p)
    assert classifier_fingerprint(c2) == classifier_fingerprint(clf) and c2.meta['data_sha256'] == 'abc'
    a = compute_metrics(te.images[:100], te.images[100:], metrics=('fid',), classifier=clf)['fid']
    b = compute_metrics(te.images[:100], te.images[100:], metrics=('fid',), classifier=str(p))['fid']
    assert abs(a - b) < 1e-9
    with pytest.raises(MetricsError, match='nope.pt'):
        load_classifier(tmp_path / 'nope.pt')
    (tmp_path / 'bad.pt').write_bytes(p.read_bytes()[:100])
    with pytest.raises(MetricsError, match='bad.pt'):
        load_classifier(tmp_path / 'bad.pt')
    torch.save({'format': 'other'}, tmp_path / 'other.pt')
    with pytest.raises(MetricsError, match='other.pt'):
        load_classifier(tmp_path / 'other.pt')


def test_classifier_confidence(digits, clf, noise):
    te = digits[1]
    c = classifier_confidence(te.images, clf)
    n = classifier_confidence(noise, clf)
    assert c['confident_frac'] > 0.8 and c['classes_present'] == 10
    assert n['confident_frac'] < c['confident_frac']
    # one class only -> one class present
    ones = te.images[te.labels == 3]
    assert classifier_confidence(ones, clf)['classes_present'] <= 2
    assert abs(sum(c['class_fractions']) - 1) < 1e-6


def test_classifier_accepts_other_channels_and_sizes(digits, clf):
    te = digits[1]
    rgb = te.images.repeat(1, 3, 1, 1)
    f1 = compute_metrics(te.images, te.images, metrics=('fid',), classifier=clf)['fid']
    f3 = compute_metrics(rgb, te.images, metrics=('fid',), classifier=clf)['fid']
    assert abs(f1) < 1e-6 and abs(f3) < 1e-3   # gray replicated to RGB averages back to the same images


def test_cache_key_and_files(digits, clf, tmp_path):
    tr, te = digits
    tag = 'clf' + classifier_fingerprint(clf)[:16]
    k = reference_cache_name(tr.images, tag)
    changed = tr.images.clone(); changed[5, 0, 7, 7] ^= 1
    assert reference_cache_name(changed, tag) != k
    assert reference_cache_name(tr.images, 'clfother') != k
    r1 = compute_metrics(te.images, tr.images, metrics=('fid',), classifier=clf, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.startswith(k) and 'stat-fid' in f for f in files), files
    r2 = compute_metrics(te.images, tr.images, metrics=('fid',), classifier=clf, cache_dir=tmp_path)
    assert r1 == r2
    r3 = compute_metrics(te.images, changed, metrics=('fid',), classifier=clf, cache_dir=tmp_path)
    assert len([p for p in tmp_path.iterdir() if 'stat-fid' in p.name]) == 2
    # a changed reference really is recomputed (not the stale statistics): matches the uncached value
    assert abs(r3['fid'] - compute_metrics(te.images, changed, metrics=('fid',), classifier=clf)['fid']) < 1e-9


def test_inception_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv('NOCTCM_OFFLINE', '1')
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        img = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
        t0 = time.time()
        with pytest.raises(MetricsError, match='evaluation.feature_weights'):
            compute_metrics(img, img, metrics=('fid', 'is'), feature_extractor='inception-v3-compat')
        with pytest.raises(MetricsError, match='evaluation.feature_weights'):
            compute_metrics(img, img, metrics=('fid',), feature_extractor='inception-v3-compat',
                            feature_weights=str(tmp_path / 'missing.pth'))
        with pytest.raises(MetricsError, match='vgg16'):
            compute_metrics(img, img, metrics=('precision',), feature_extractor='inception-v3-compat')
        assert time.time() - t0 < 5.0
        # a weights file in the hub cache is picked up without network
        ck = tmp_path / 'hub' / 'checkpoints'; ck.mkdir(parents=True)
        (ck / M.INCEPTION_WEIGHTS_FILE).write_bytes(b'x')
        assert M.resolve_inception_weights() == str(ck / M.INCEPTION_WEIGHTS_FILE)
    finally:
        torch.hub.set_dir(old)


def test_bad_inputs(digits, clf):
    te = digits[1]
    with pytest.raises(MetricsError, match='uint8'):
        compute_metrics(te.float_images(), te.images, metrics=('fid',), classifier=clf)
    with pytest.raises(MetricsError, match='unknown metric'):
        compute_metrics(te.images, te.images, metrics=('ppl',), classifier=clf)
    with pytest.raises(MetricsError, match='classifier'):
        compute_metrics(te.images, te.images, metrics=('fid',))
    with pytest.raises(MetricsError, match='not a torch-fidelity dataset'):
        compute_metrics(te.images, 'mnist-train', metrics=('fid',), classifier=clf)
    with pytest.raises(MetricsError, match='labels'):
        train_domain_classifier(te.images, torch.full((len(te),), -1), steps=1)


def test_kid_small_sets(digits, clf):
    te = digits[1]
    out = compute_metrics(te.images[:50], te.images[50:], metrics=('kid',), classifier=clf)
    assert np.isfinite(out['kid_mean'])
