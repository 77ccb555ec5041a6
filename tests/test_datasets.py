"""Tests of noctcm.data.datasets (nbs/08_datasets.ipynb). Nothing here downloads."""
import io
import json
import pickle
import tarfile
import time
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from PIL import Image

import noctcm.data.datasets as D
from noctcm.data.datasets import (DataError, DIGITS_SHA256, ImageTensorDataset, fetch, load_dataset, load_prepared,
                                  make_toy2d, prepare, read_cifar10, read_image_folder, resize_bilinear_np, sha256_file)


def _hash_tree(d):
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in sorted(d.rglob('*')) if p.is_file()}


def _cfg(root, name='digits', resolution=16, channels=1, src=None):
    return {'name': name, 'root': str(root), 'resolution': resolution, 'channels': channels, 'src': src}


# ---------------------------------------------------------------- digits
def test_digits_fetch_byte_identical(tmp_path):
    a, b = fetch('digits', tmp_path / 'a'), fetch('digits', tmp_path / 'b')
    ha, hb = _hash_tree(a), _hash_tree(b)
    assert ha == hb == DIGITS_SHA256
    # re-fetching over existing files keeps the bytes (and force rewrites the same bytes)
    fetch('digits', tmp_path / 'a', force=True)
    assert _hash_tree(a) == ha
    split = json.loads((a / 'split.json').read_text())
    assert len(split['train']) == 1500 and len(split['test']) == 297
    assert not set(split['train']) & set(split['test'])
    assert sorted(split['train'] + split['test']) == list(range(1797))


@pytest.mark.parametrize('resolution,channels', [(16, 1), (8, 1), (24, 3), (12, 1)])
def test_digits_shapes_ranges(tmp_path, resolution, channels):
    fetch('digits', tmp_path)
    tr = load_dataset(_cfg(tmp_path, resolution=resolution, channels=channels), 'train')
    te = load_dataset(_cfg(tmp_path, resolution=resolution, channels=channels), 'test')
    assert len(tr) == 1500 and len(te) == 297
    assert tr.images.shape == (1500, channels, resolution, resolution) and tr.images.dtype == torch.uint8
    x, y = tr[3]
    assert x.dtype == torch.float32 and x.shape == (channels, resolution, resolution)
    assert -1.0 <= x.min() and x.max() <= 1.0
    xs = tr.float_images()
    assert xs.min() == -1.0 and xs.max() > 0.95
    assert set(te.labels.tolist()) == set(range(10))
    if resolution == 8:   # identity resampling: exactly round(v * 255 / 16) of the raw values
        raw = np.load(tmp_path / 'digits' / 'images.npy')
        idx = json.loads((tmp_path / 'digits' / 'split.json').read_text())['test']
        assert np.array_equal(te.images[:, 0].numpy(), np.floor(raw[idx] / 16 * 255 + 0.5).astype(np.uint8))
    if channels == 3:
        assert torch.equal(tr.images[:, 0], tr.images[:, 2])


def test_digits_data_std_close_to_sigma_d(tmp_path):
    fetch('digits', tmp_path)
    x = load_dataset(_cfg(tmp_path), 'train').float_images()
    assert 0.3 < x.std().item() < 0.8   # the models assume sigma_d = 0.5 for data in [-1, 1]


@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 12), w=st.integers(2, 12), size=st.integers(1, 30))
def test_bilinear_matches_torch(h, w, size):
    a = np.random.RandomState(h * 100 + w).rand(2, h, w)
    ref = F.interpolate(torch.from_numpy(a)[:, None], size=(size, size), mode='bilinear', align_corners=False)[:, 0]
    assert np.allclose(resize_bilinear_np(a, size), ref.numpy(), atol=1e-12)


def test_prepare_and_load_prepared(tmp_path):
    fetch('digits', tmp_path)
    info = prepare({'data': _cfg(tmp_path)}, tmp_path / 'prep')
    saved = json.loads((tmp_path / 'prep' / 'info.json').read_text())
    assert saved == info and saved['splits']['train']['shape'] == [1500, 1, 16, 16]
    te = load_prepared(tmp_path / 'prep', 'test')
    assert torch.equal(te.images, load_dataset(_cfg(tmp_path), 'test').images)
    assert info['splits']['test']['sha256'] == te.sha256()
    # prepare is deterministic
    info2 = prepare({'data': _cfg(tmp_path)}, tmp_path / 'prep2')
    assert info2 == info
    # tampered info -> clear error naming the file
    saved['splits']['test']['sha256'] = '0' * 64
    (tmp_path / 'prep' / 'info.json').write_text(json.dumps(saved))
    with pytest.raises(DataError, match='test.pt'):
        load_prepared(tmp_path / 'prep', 'test')
    with pytest.raises(DataError, match='missing prepared file'):
        load_prepared(tmp_path / 'nowhere', 'train')
    (tmp_path / 'prep' / 'train.pt').write_bytes(b'garbage')
    with pytest.raises(DataError, match='train.pt'):
        load_prepared(tmp_path / 'prep', 'train')


@pytest.mark.parametrize('kind', ['truncated', 'float', 'shape', 'missing_labels', 'labels_len'])
def test_digits_bad_files_named(tmp_path, kind):
    d = fetch('digits', tmp_path)
    if kind == 'truncated':
        (d / 'images.npy').write_bytes((d / 'images.npy').read_bytes()[:1000]); name = 'images.npy'
    elif kind == 'float':
        np.save(d / 'images.npy', np.zeros((1797, 8, 8), np.float32)); name = 'images.npy'
    elif kind == 'shape':
        np.save(d / 'images.npy', np.zeros((1797, 8, 9), np.uint8)); name = 'images.npy'
    elif kind == 'missing_labels':
        (d / 'labels.npy').unlink(); name = 'labels.npy'
    else:
        np.save(d / 'labels.npy', np.zeros(5, np.int64)); name = 'labels.npy'
    with pytest.raises(DataError, match=name.replace('.', r'\.')):
        load_dataset(_cfg(tmp_path), 'train')


def test_dataset_rejects_bad_storage():
    with pytest.raises(DataError):
        ImageTensorDataset(torch.zeros(3, 1, 4, 4))
    with pytest.raises(DataError):
        ImageTensorDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(2))
    with pytest.raises(DataError, match='unknown dataset'):
        fetch('mnist', '/tmp/none')


# ---------------------------------------------------------------- cifar10
def _write_cifar(folder, n=3, seed=0, corrupt=None):
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.RandomState(seed)
    arrays = {}
    for name in D.CIFAR10_FILES:
        img = g.randint(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        lab = list(g.randint(0, 10, n))
        arrays[name] = (img, np.array(lab))
        d = {b'batch_label': name.encode(), b'labels': lab, b'data': img.reshape(n, 3072), b'filenames': [b'x.png'] * n}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    return arrays


def test_cifar10_reads_official_format(tmp_path):
    src = tmp_path / 'src' / 'cifar-10-batches-py'
    arrays = _write_cifar(src)
    # plane layout: 1024 red values (rows top to bottom), then green, then blue
    d = pickle.loads((src / 'test_batch').read_bytes(), encoding='bytes')
    d[b'data'][0] = 0
    d[b'data'][0, 1] = 7          # red, row 0, column 1
    d[b'data'][0, 1024 + 32] = 9  # green, row 1, column 0
    (src / 'test_batch').write_bytes(pickle.dumps(d))
    img, lab = read_cifar10(src, 'test')
    assert img.shape == (3, 3, 32, 32) and img[0, 0, 0, 1] == 7 and img[0, 1, 1, 0] == 9 and img[0].sum() == 16
    tr, trl = read_cifar10(src, 'train')
    assert tr.shape == (15, 3, 32, 32) and np.array_equal(tr[:3], arrays['data_batch_1'][0])
    assert np.array_equal(trl[3:6], arrays['data_batch_2'][1])
    # fetch copies from src (folder or its parent), then load_dataset resamples
    out = fetch('cifar10', tmp_path / 'data', src=tmp_path / 'src', download=False)
    assert sorted(p.name for p in (out / 'cifar-10-batches-py').iterdir()) == sorted(D.CIFAR10_FILES)
    ds = load_dataset(_cfg(tmp_path / 'data', 'cifar10', 32, 3), 'train')
    assert torch.equal(ds.images, torch.from_numpy(tr)) and len(ds) == 15
    small = load_dataset(_cfg(tmp_path / 'data', 'cifar10', 16, 1), 'test')
    assert small.images.shape == (3, 1, 16, 16)


def test_cifar10_from_tarball(tmp_path):
    src = tmp_path / 'x' / 'cifar-10-batches-py'
    _write_cifar(src, n=2)
    tgz = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(tgz, 'w:gz') as tf:
        tf.add(src, arcname='cifar-10-batches-py')
    out = fetch('cifar10', tmp_path / 'data', src=tgz, download=False)
    assert read_cifar10(out / 'cifar-10-batches-py', 'all')[0].shape == (12, 3, 32, 32)


@pytest.mark.parametrize('kind', ['truncated', 'wrong_dtype', 'no_labels'])
def test_cifar10_corrupt_named(tmp_path, kind):
    src = tmp_path / 'cifar-10-batches-py'
    _write_cifar(src)
    p = src / 'data_batch_3'
    if kind == 'truncated':
        p.write_bytes(p.read_bytes()[:200])
    elif kind == 'wrong_dtype':
        p.write_bytes(pickle.dumps({b'data': np.zeros((3, 3072), np.float32), b'labels': [0, 1, 2]}))
    else:
        p.write_bytes(pickle.dumps({b'data': np.zeros((3, 3072), np.uint8)}))
    with pytest.raises(DataError, match='data_batch_3'):
        read_cifar10(src, 'train')
    with pytest.raises(DataError, match='data_batch_3'):
        fetch('cifar10', tmp_path / 'data', src=src, download=False)


def test_cifar10_offline_fails_at_once(tmp_path, monkeypatch):
    t0 = time.time()
    with pytest.raises(DataError) as e:
        fetch('cifar10', tmp_path, download=False)
    msg = str(e.value)
    assert 'cifar-10-batches-py' in msg and 'folder' in msg and str(tmp_path) in msg
    # with download allowed but no network (forced offline), the same message, no attempt to download
    monkeypatch.setenv('NOCTCM_OFFLINE', '1')
    with pytest.raises(DataError, match='no network'):
        fetch('cifar10', tmp_path)
    with pytest.raises(DataError, match='folder'):
        load_dataset(_cfg(tmp_path, 'cifar10', 32, 3), 'train')
    assert time.time() - t0 < 5.0
    assert not (tmp_path / 'cifar10' / 'cifar-10-batches-py' / 'data_batch_1').exists()


def test_network_available_offline_env(monkeypatch):
    monkeypatch.setenv('NOCTCM_OFFLINE', '1')
    assert D.network_available() is False


# ---------------------------------------------------------------- folder
def _png(arr):
    b = io.BytesIO(); Image.fromarray(arr).save(b, format='PNG'); return b.getvalue()


def test_folder_zip(tmp_path):
    g = np.random.RandomState(0)
    imgs = {f'img_{i:02d}.png': g.randint(0, 256, (8, 8, 3)).astype(np.uint8) for i in range(5)}
    z = tmp_path / 'imgs.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        for name in reversed(sorted(imgs)):   # archive order must not matter
            zf.writestr(name, _png(imgs[name]))
        zf.writestr('notes.txt', 'not an image')
        zf.writestr('__MACOSX/._img_00.png', b'junk')
    x, lab, classes = read_image_folder(z, 8, 3)
    assert x.shape == (5, 3, 8, 8) and classes == [] and (lab == -1).all()
    for i, name in enumerate(sorted(imgs)):
        assert np.array_equal(x[i], imgs[name].transpose(2, 0, 1))
    g1, _, _ = read_image_folder(z, 4, 1)
    ref = np.asarray(Image.fromarray(imgs['img_00.png']).convert('L').resize((4, 4), Image.LANCZOS, reducing_gap=None))
    assert g1.shape == (5, 1, 4, 4) and np.array_equal(g1[0, 0], ref)
    # fetch + load through the config, deterministic split (10 % test, at least one)
    fetch('folder', tmp_path / 'data', src=z, resolution=8, channels=3)
    tr = load_dataset(_cfg(tmp_path / 'data', 'folder', 8, 3), 'train')
    te = load_dataset(_cfg(tmp_path / 'data', 'folder', 8, 3), 'test')
    assert len(tr) == 4 and len(te) == 1
    h1 = _hash_tree(tmp_path / 'data' / 'folder')
    fetch('folder', tmp_path / 'data2', src=z, resolution=8, channels=3)
    assert _hash_tree(tmp_path / 'data2' / 'folder') == h1


def test_folder_directory_with_classes_and_crop(tmp_path):
    root = tmp_path / 'imgs'
    for cls, val in (('zebra', 200), ('ant', 50)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            a = np.full((10, 20), val, np.uint8)
            a[:, :5] = 0; a[:, 15:] = 255      # the centre crop (columns 5..14) keeps only `val`
            Image.fromarray(a).save(root / cls / f'{i}.png')
    (root / '.hidden.png').write_bytes(b'')
    x, lab, classes = read_image_folder(root, 10, 1)
    assert classes == ['ant', 'zebra'] and lab.tolist() == [0, 0, 0, 1, 1, 1]
    assert (x[:3] == 50).all() and (x[3:] == 200).all()
    ds = load_dataset(_cfg(tmp_path / 'nodata', 'folder', 10, 1, src=str(root)), 'all')
    assert len(ds) == 6 and ds.classes == ['ant', 'zebra']


def test_folder_corrupt_image_named(tmp_path):
    root = tmp_path / 'imgs'; root.mkdir()
    good = _png(np.zeros((8, 8), np.uint8))
    (root / 'a.png').write_bytes(good)
    (root / 'b.png').write_bytes(good[:30])
    with pytest.raises(DataError, match='b.png'):
        read_image_folder(root, 8, 1)
    with pytest.raises(DataError, match='does not exist'):
        read_image_folder(tmp_path / 'nope', 8, 1)
    (tmp_path / 'bad.zip').write_bytes(b'PK\x03\x04 not really')
    with pytest.raises(DataError, match='bad.zip'):
        read_image_folder(tmp_path / 'bad.zip', 8, 1)
    with pytest.raises(DataError, match='src'):
        fetch('folder', tmp_path / 'data')


# ---------------------------------------------------------------- toy2d
@pytest.mark.parametrize('name', ['gmm8', 'gmm25', 'moons', 'rings'])
def test_toy2d(name):
    a, b, c = make_toy2d(name, 500, 0), make_toy2d(name, 500, 0), make_toy2d(name, 500, 1)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() < 3.5


def test_toy2d_gmm8_modes():
    x = make_toy2d('gmm8', 8000, 0)
    ang = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(ang / (2 * np.pi / 8)) % 8
    counts = torch.bincount(k.long(), minlength=8).float()
    assert (counts / 8000 - 1 / 8).abs().max() < 0.02          # equal weights
    with pytest.raises(DataError):
        make_toy2d('spiral', 10)


def _class_zip(path, top, classes, n, seed=0, extra=()):
    g = np.random.RandomState(seed)
    with zipfile.ZipFile(path, 'w') as zf:
        for c in classes:
            for i in range(n): zf.writestr(f'{top}/{c}/{i:04d}.png', _png(g.randint(0, 256, (8, 8, 3)).astype(np.uint8)))
        for name in extra: zf.writestr(name, _png(g.randint(0, 256, (8, 8, 3)).astype(np.uint8)))
    return path


def test_folder_classes_below_the_common_root_and_held_out_archive(tmp_path):
    "The CIFAR-10 JPEG layout `train/<class>/NNNN.jpg` + `test/<class>/...`: classes are the folders below `train/`."
    from noctcm.data.datasets import folder_classes
    tr = _class_zip(tmp_path / 'train.zip', 'train', ('truck', 'cat', 'dog'), 4, extra=('train/stray.png',))
    te = _class_zip(tmp_path / 'test.zip', 'test', ('cat', 'dog'), 2, seed=1)
    info = {}
    x, lab, classes = read_image_folder(tr, 8, 3, info=info)
    assert classes == ['cat', 'dog', 'truck'] and np.bincount(lab).tolist() == [4, 4, 4] and len(x) == 12
    assert info == {'class_counts': {'cat': 4, 'dog': 4, 'truck': 4}, 'left_out': 1}   # the stray root image
    # ImageFolder rules: deeper folders belong to their top class; a flat folder (even below a common root) is unlabelled
    assert folder_classes(['a/x/1.png', 'a/y/deep/2.png', 'a/y/3.png'])[:2][0] == ['x', 'y']
    assert folder_classes(['root/1.png', 'root/2.png'])[0] == [] and folder_classes(['1.png'])[1].tolist() == [-1]
    # the held-out archive becomes the test split, with the train classes' labels
    fetch('folder', tmp_path / 'data', src=tr, test_src=te, resolution=8, channels=3)
    split = json.loads((tmp_path / 'data' / 'folder' / 'split.json').read_text())
    assert split['class_counts'] == {'train': {'cat': 4, 'dog': 4, 'truck': 4}, 'test': {'cat': 2, 'dog': 2, 'truck': 0}}
    cfg = _cfg(tmp_path / 'data', 'folder', 8, 3)
    a, b = load_dataset(cfg, 'train'), load_dataset(cfg, 'test')
    assert len(a) == 12 and len(b) == 4 and b.labels.tolist() == [0, 0, 1, 1] and b.classes == ['cat', 'dog', 'truck']
    info = prepare({'data': cfg}, tmp_path / 'prep', tmp_path / 'data')
    assert info['classes'] == ['cat', 'dog', 'truck'] and info['splits']['test']['class_counts']['dog'] == 2
    # the same from a directory tree, read directly through data.src / data.test_src (no fetch)
    d = tmp_path / 'tree'
    with zipfile.ZipFile(tr) as zf: zf.extractall(d)
    ds = load_dataset(dict(name='folder', root=str(tmp_path / 'none'), resolution=8, channels=3, src=str(d / 'train'),
                           test_src=str(te)), 'test')
    assert len(ds) == 4 and ds.classes == ['cat', 'dog', 'truck']
    # a held-out class the training images do not have, or another layout, is named
    bad = _class_zip(tmp_path / 'bad.zip', 'test', ('cat', 'emu'), 1)
    with pytest.raises(DataError, match="emu"): fetch('folder', tmp_path / 'd2', src=tr, test_src=bad, resolution=8)
    flat = _flat_zip(tmp_path / 'flat.zip')
    with pytest.raises(DataError, match="flat folder"): fetch('folder', tmp_path / 'd3', src=tr, test_src=flat, resolution=8)


def _flat_zip(path):
    with zipfile.ZipFile(path, 'w') as zf: zf.writestr('a.png', _png(np.zeros((8, 8, 3), np.uint8)))
    return path


def test_folder_corrupt_images_are_counted(tmp_path):
    root = tmp_path / 'imgs'; root.mkdir()
    good = _png(np.zeros((8, 8), np.uint8))
    for n in 'abcd': (root / f'{n}.png').write_bytes(good if n in 'ad' else good[:30])
    with pytest.raises(DataError, match=r"b\.png \(and 1 more\)"):
        read_image_folder(root, 8, 1)


def test_domain_classifier_needs_two_classes():
    import torch
    from noctcm.utils.metrics import MetricsError, check_classifier_data
    assert check_classifier_data(torch.tensor([0] * 10 + [1] * 10)) == {0: 10, 1: 10}
    for labels, why in ((torch.full((30,), -1), 'unlabelled'), (torch.zeros(30), 'one class'),
                        (torch.tensor([0] * 20 + [1] * 3), 'too few')):
        with pytest.raises(MetricsError, match=why) as e: check_classifier_data(labels, ['a', 'b'])
        assert 'evaluation.feature_extractor=inception-v3-compat' in str(e.value) and 'evaluation.feature_weights' in str(e.value)
