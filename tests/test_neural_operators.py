"""Parametrised / property tests for noctcm.models.neural_operators (algorithms.md §10 item 9).

Independent truths: a numpy per-mode loop over the full complex FFT (`naive`), an einsum over full-size
zero-padded weights (`einsum_ref`), analytic band-limited sinusoids, central finite differences and gradcheck.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from noctcm.grids import fourier_resample, fourier_shift
from noctcm.models.neural_operators import FourierConvBlock, SpectralConv2d, group_count, refined_conv, refined_group_norm

torch.set_num_threads(1)
F64 = torch.float64


def naive(x, R, m1, m2, output_size=None):
    """Per-mode Python loop on np.fft.fft2 over the signed frequencies |k1| <= m1-1, 0 <= k2 < m2 that both grids hold
    strictly below their Nyquist frequency; y = Re ifft2(c * Y), c = 1 on column 0 and 2 on the others."""
    x = np.asarray(x, dtype=np.float64)
    B, _, H, W = x.shape
    H2, W2 = output_size or (H, W)
    Xf = np.fft.fft2(x) / (H * W)
    Yf = np.zeros((B, R.shape[-1], H2, W2), dtype=complex)
    for r in range(2 * m1 - 1):
        k1 = r if r < m1 else r - (2 * m1 - 1)
        if 2 * abs(k1) >= min(H, H2):
            continue
        for k2 in range(m2):
            if 2 * k2 >= min(W, W2):
                continue
            for o in range(R.shape[-1]):
                Yf[:, o, k1 % H2, k2] = sum(Xf[:, i, k1 % H, k2] * R[r, k2, i, o] for i in range(R.shape[-2]))
    c = np.where(np.arange(W2) == 0, 1.0, 2.0)
    return np.real(np.fft.ifft2(Yf * c) * (H2 * W2))


def einsum_ref(x, R, m1, m2):
    "Second torch implementation: full-size per-mode weight tensor (zeros outside K), einsum, Re of a full ifft2."
    B, Ci, H, W = x.shape
    Co = R.shape[-1]
    full = torch.zeros(H, W, Ci, Co, dtype=torch.complex128)
    for r in range(2 * m1 - 1):
        k1 = r if r < m1 else r - (2 * m1 - 1)
        for k2 in range(m2):
            if 2 * abs(k1) < H and 2 * k2 < W:
                full[k1 % H, k2] = R[r, k2] * (1.0 if k2 == 0 else 2.0)
    Xf = torch.fft.fft2(x.to(F64)) / (H * W)
    Yf = torch.einsum("bihw,hwio->bohw", Xf, full)
    return (torch.fft.ifft2(Yf) * (H * W)).real


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


SHAPES = [(8, 8), (7, 9), (9, 6), (12, 7), (16, 16), (6, 10)]
MODES = [(1, 1), (2, 3), (3, 4), (3, 1)]


@pytest.mark.parametrize("H,W", SHAPES)
@pytest.mark.parametrize("m1,m2", MODES)
@pytest.mark.parametrize("cin,cout", [(1, 1), (3, 2), (2, 5)])
def test_matches_independent_references(H, W, m1, m2, cin, cout):
    "Every grid, including those too coarse for some of the modes (they keep the ones they hold)."
    torch.manual_seed(H * 100 + W)
    conv = SpectralConv2d(cin, cout, m1, m2).double()
    x = rand(2, cin, H, W, seed=H + W)
    R = conv.complex_weight().detach()
    y = conv(x)
    assert y.shape == (2, cout, H, W) and y.dtype == F64 and not y.is_complex()
    np.testing.assert_allclose(y.detach().numpy(), naive(x.numpy(), R.numpy(), m1, m2), atol=1e-12)
    torch.testing.assert_close(y, einsum_ref(x, R, m1, m2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("osz", [(16, 16), (12, 9), (6, 6), (7, 11)])
def test_output_size_matches_reference(osz):
    conv = SpectralConv2d(2, 3, 3, 3).double()
    x = rand(1, 2, 10, 8, seed=1)
    np.testing.assert_allclose(conv(x, output_size=osz).detach().numpy(),
                               naive(x.numpy(), conv.complex_weight().detach().numpy(), 3, 3, osz), atol=1e-12)


def test_float32_close_to_float64_reference():
    conv = SpectralConv2d(4, 4, 4)
    x = rand(2, 4, 16, 16, dtype=torch.float32)
    ref = naive(x.double().numpy(), conv.complex_weight().detach().to(torch.complex128).numpy(), 4, 4)
    y = conv(x)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), seed=st.integers(0, 10_000),
       H=st.integers(4, 12), W=st.integers(5, 12))
def test_linearity_property(a, b, seed, H, W):
    conv = SpectralConv2d(2, 3, 2, 3).double()
    x, y = rand(2, 1, 2, H, W, seed=seed)
    torch.testing.assert_close(conv(a * x + b * y), a * conv(x) + b * conv(y), atol=1e-11, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_jvp_equals_layer_of_tangent(dtype):
    conv = SpectralConv2d(3, 3, 3).to(dtype)
    x, v = rand(2, 2, 3, 8, 8, seed=3, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    _, tan = torch.func.jvp(conv, (x,), (v,))
    torch.testing.assert_close(tan, conv(v), atol=tol, rtol=0)
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        t2 = fwAD.unpack_dual(conv(fwAD.make_dual(x, v))).tangent
    torch.testing.assert_close(t2, conv(v), atol=tol, rtol=0)


def test_jvp_wrt_weights_equals_layer_with_tangent_weights():
    "The layer is bilinear in (x, R): d/dR [K_R x](dR) = K_dR x."
    conv = SpectralConv2d(2, 2, 2).double()
    x = rand(1, 2, 6, 6, seed=4)
    dw = rand(*conv.weight.shape, seed=5)
    f = lambda w: torch.func.functional_call(conv, {"weight": w}, (x,))
    _, tan = torch.func.jvp(f, (conv.weight.detach(),), (dw,))
    torch.testing.assert_close(tan, f(dw), atol=1e-12, rtol=0)


@settings(max_examples=20, deadline=None)
@given(s1=st.integers(-20, 20), s2=st.integers(-20, 20), H=st.sampled_from([6, 7, 8]), W=st.sampled_from([5, 8, 9]))
def test_shift_equivariance(s1, s2, H, W):
    conv = SpectralConv2d(2, 2, 3, 3).double()
    x = rand(1, 2, H, W, seed=s1 * 41 + s2)
    torch.testing.assert_close(conv(torch.roll(x, (s1, s2), (-2, -1))), torch.roll(conv(x), (s1, s2), (-2, -1)),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("H,W", [(8, 8), (6, 9), (4, 4), (10, 3), (7, 5)])
def test_identity_weights_reproduce_input_without_nyquist_content(H, W):
    "All modes a grid holds, identity weights: any input whose spectrum vanishes at the Nyquist frequencies."
    C = 3
    conv = SpectralConv2d(C, C, (H + 1) // 2, (W + 1) // 2).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[..., 0] += torch.eye(C, dtype=F64)
    x = fourier_resample(rand(2, C, H - 1 + H % 2, W - 1 + W % 2, seed=H * W), (H, W))
    torch.testing.assert_close(conv(x), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("m1,m2", [(1, 1), (2, 2), (3, 2)])
def test_truncation_is_hand_low_pass(m1, m2):
    "Identity weights on fewer modes = explicit DFT low-pass sum over |k1| < m1, |k2| < m2 (a symmetric band)."
    H, W = 8, 7
    conv = SpectralConv2d(1, 1, m1, m2).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[..., 0, 0, 0] = 1.0
    x = rand(1, 1, H, W, seed=7)[0, 0]
    a = torch.arange(H, dtype=F64).view(H, 1, 1, 1)
    b = torch.arange(W, dtype=F64).view(1, W, 1, 1)
    y = torch.zeros(H, W, dtype=F64)
    for k1 in range(-(m1 - 1), m1):
        for k2 in range(-(m2 - 1), m2):
            keep = 1.0
            coef = (x.view(1, 1, H, W) * torch.exp(-2j * math.pi * (k1 * a.view(1, 1, H, 1) / H + k2 * b.view(1, 1, 1, W) / W))).sum() / (H * W)
            y += float(keep) * (coef * torch.exp(2j * math.pi * (k1 * a[..., 0, 0] / H + k2 * b[..., 0, 0] / W))).real
    torch.testing.assert_close(conv(x.view(1, 1, H, W))[0, 0], y, atol=1e-12, rtol=0)


def bandlimited(n, C, seed=0, kmax=6):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.meshgrid(torch.arange(n, dtype=F64) / n, torch.arange(n, dtype=F64) / n, indexing="ij")
    out = torch.zeros(1, C, n, n, dtype=F64)
    for c in range(C):
        for _ in range(8):
            k1, k2 = torch.randint(-kmax + 1, kmax, (2,), generator=g).tolist()
            amp, ph = torch.rand(2, generator=g, dtype=F64).tolist()
            out[0, c] += amp * torch.cos(2 * math.pi * (k1 * a + k2 * b) + 6.28 * ph)
    return out


@pytest.mark.parametrize("modes", [2, 5, (7, 4), (15, 15)])
@pytest.mark.parametrize("seed", [0, 1])
def test_resolution_consistency(modes, seed):
    conv = SpectralConv2d(3, 2, modes).double()
    x32, x64 = bandlimited(32, 3, seed), bandlimited(64, 3, seed)
    torch.testing.assert_close(fourier_resample(x32, (64, 64)), x64, atol=1e-12, rtol=0)
    y64 = conv(x64)
    torch.testing.assert_close(y64, fourier_resample(conv(x32), (64, 64)), atol=1e-12, rtol=0)
    torch.testing.assert_close(y64, conv(x32, output_size=(64, 64)), atol=1e-12, rtol=0)
    torch.testing.assert_close(conv(x32), conv(x64, output_size=(32, 32)), atol=1e-12, rtol=0)
    torch.testing.assert_close(conv(x32), conv(x64)[..., ::2, ::2], atol=1e-12, rtol=0)


@pytest.mark.parametrize("modes,shape,osz", [(4, (7, 16), None), (4, (8, 5), None), ((2, 5), (8, 7), None),
                                             (4, (8, 8), (6, 8)), (4, (8, 8), (8, 5)), (4, (2, 2), None)])
def test_coarse_grids_keep_the_modes_they_hold(modes, shape, osz):
    "A grid too coarse for some modes runs with the modes strictly below its (and the output's) Nyquist frequency."
    conv = SpectralConv2d(1, 1, modes).double()
    x = rand(1, 1, *shape, seed=3)
    m1, m2 = (modes, modes) if isinstance(modes, int) else modes
    np.testing.assert_allclose(conv(x, output_size=osz).detach().numpy(),
                               naive(x.numpy(), conv.complex_weight().detach().numpy(), m1, m2, osz), atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(d1=st.floats(-2, 2), d2=st.floats(-2, 2), H=st.sampled_from([6, 7, 8]), W=st.sampled_from([5, 8, 9]))
def test_sub_pixel_shift_equivariance(d1, d2, H, W):
    "No Nyquist row: a Fourier (sub-pixel) shift of the input shifts the output exactly."
    conv = SpectralConv2d(2, 2, 3, 3).double()
    x = rand(1, 2, H, W, seed=int(1000 * (d1 + d2)) % 997)
    torch.testing.assert_close(conv(fourier_shift(x, (d1, d2))), fourier_shift(conv(x), (d1, d2)), atol=1e-11, rtol=0)


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_refined_layers_sub_lattice_identity(s, stride):
    "On a grid s times finer, the refined conv / group norm / spectral analysis equal the layers on the nodes."
    conv = torch.nn.Conv2d(3, 4, 3, stride=stride, padding=1).double()
    gn = torch.nn.GroupNorm(2, 4).double()
    spec = SpectralConv2d(4, 4, 3).double()
    fine = rand(2, 3, 8 * s, 8 * s, seed=s)
    nodes = fine[..., ::s, ::s]
    h = refined_conv(conv, fine, s)
    torch.testing.assert_close(h[..., ::s, ::s], conv(nodes), atol=1e-12, rtol=0)
    torch.testing.assert_close(refined_group_norm(gn, h, s)[..., ::s, ::s], gn(conv(nodes)), atol=1e-12, rtol=0)
    torch.testing.assert_close(spec(h[..., ::s, ::s], output_size=h.shape[-2:])[..., ::s, ::s], spec(conv(nodes)),
                               atol=1e-12, rtol=0)
    blk = FourierConvBlock(4, 4, modes=3).double()
    torch.testing.assert_close(blk(h, s)[..., ::s, ::s], blk(conv(nodes)), atol=1e-12, rtol=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        SpectralConv2d(1, 1, 0)
    with pytest.raises(ValueError):
        SpectralConv2d(0, 1, 2)
    with pytest.raises(ValueError, match="expected input"):
        SpectralConv2d(2, 1, 2)(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        SpectralConv2d(2, 1, 2)(torch.randn(3, 8, 8))
    with pytest.raises(ValueError):
        FourierConvBlock(3, 3, 2, norm="batch")
    with pytest.raises(ValueError):
        FourierConvBlock(3, 3, 2, activation="relu6")


@pytest.mark.parametrize("bias", [False, True])
def test_gradcheck(bias):
    conv = SpectralConv2d(2, 2, 2, 2, bias=bias).double()
    x = rand(1, 2, 4, 5, seed=9).requires_grad_()
    names = ["weight"] + (["bias"] if bias else [])
    params = tuple(getattr(conv, n) for n in names)
    f = lambda x, *p: torch.func.functional_call(conv, dict(zip(names, p)), (x,))
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))
    assert torch.autograd.gradcheck(lambda x: conv(x, output_size=(7, 6)), (x,))


def test_weights_are_real_parameters_and_state_dict_roundtrip():
    conv = SpectralConv2d(3, 4, 2, 3)
    assert conv.weight.dtype == torch.float32 and conv.weight.shape == (3, 3, 3, 4, 2)
    assert [n for n, _ in conv.named_parameters()] == ["weight"]
    other = SpectralConv2d(3, 4, 2, 3)
    other.load_state_dict(conv.state_dict())
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(other(x), conv(x))
    # a state dict of the earlier layout [2, m1, m2, in, out, 2] (rows -m1..m1-1) loads with the Nyquist row dropped
    old = torch.randn(2, 2, 3, 3, 4, 2)
    other.load_state_dict({"weight": old})
    torch.testing.assert_close(other.weight.data, torch.cat([old[0], old[1, 1:]]))
    # init: E|R|^2 = 2 / (in + out)
    big = SpectralConv2d(16, 48, 8)
    assert abs(big.complex_weight().abs().pow(2).mean().item() - 2 / 64) < 0.1 * 2 / 64


def test_bfloat16_input_returns_bfloat16_and_float32_math():
    conv = SpectralConv2d(3, 3, 3)
    x = torch.randn(2, 3, 8, 8).bfloat16()
    y = conv(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), conv(x.float()).bfloat16().float())


@pytest.mark.parametrize("cin,cout", [(1, 1), (3, 3), (1, 32), (3, 64), (64, 3), (48, 96)])
@pytest.mark.parametrize("n", [16, 32, 64])
def test_fourier_block_shapes(cin, cout, n):
    blk = FourierConvBlock(cin, cout, modes=4)
    y = blk(torch.randn(2, cin, n, n))
    assert y.shape == (2, cout, n, n) and torch.isfinite(y).all()


@pytest.mark.parametrize("norm,act", [("group", "silu"), ("none", "gelu"), ("group", "gelu")])
def test_fourier_block_formula_and_jvp(norm, act):
    blk = FourierConvBlock(3, 6, modes=(3, 2), norm=norm, activation=act, num_groups=4).double()
    x, v = rand(2, 2, 3, 8, 8, seed=11)
    spec = torch.from_numpy(naive(x.numpy(), blk.spectral.complex_weight().detach().numpy(), 3, 2))
    h = spec + torch.nn.functional.conv2d(x, blk.skip.weight, blk.skip.bias)
    if norm == "group":
        assert blk.norm.num_groups == 3  # largest divisor of 6 that is <= 4
        h = torch.nn.functional.group_norm(h, 3, blk.norm.weight, blk.norm.bias, blk.norm.eps)
    h = torch.nn.functional.silu(h) if act == "silu" else torch.nn.functional.gelu(h)
    torch.testing.assert_close(blk(x), h, atol=1e-12, rtol=0)
    _, tan = torch.func.jvp(blk, (x,), (v,))
    eps = 1e-6
    torch.testing.assert_close(tan, (blk(x + eps * v) - blk(x - eps * v)) / (2 * eps), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("channels,groups,expected", [(1, 32, 1), (3, 32, 3), (64, 32, 32), (96, 32, 32),
                                                      (48, 32, 24), (100, 32, 25), (7, 32, 7), (14, 4, 2)])
def test_group_count(channels, groups, expected):
    assert group_count(channels, groups) == expected


@pytest.mark.parametrize("src,dst", [((8, 10), (16, 20)), ((7, 9), (21, 10)), ((8, 8), (8, 8)), ((6, 5), (13, 12))])
def test_fourier_resample_roundtrip(src, dst):
    x = rand(2, 1, *src, seed=13)
    up = fourier_resample(x, dst)
    torch.testing.assert_close(fourier_resample(up, src), x, atol=1e-12, rtol=0)
    if dst[0] % src[0] == 0 and dst[1] % src[1] == 0:
        torch.testing.assert_close(up[..., :: dst[0] // src[0], :: dst[1] // src[1]], x, atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast_matches_cpu_reference():
    conv = SpectralConv2d(8, 8, 4).cuda()
    x = torch.randn(2, 8, 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = conv(x)
        yb = conv(x.bfloat16())
    assert y.dtype == torch.float32 and yb.dtype == torch.bfloat16
    ref = naive(x.double().cpu().numpy(), conv.complex_weight().detach().to(torch.complex128).cpu().numpy(), 4, 4)
    np.testing.assert_allclose(y.cpu().numpy(), ref, atol=1e-4)
    y.sum().backward()
    assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize("C,N,M", [(3, 8, 4), (2, 8, 8), (4, 12, 6), (5, 16, 10)])
def test_side_by_side_with_neuraloperator(C, N, M):
    """Same map as neuraloperator's SpectralConv (benchmark-only dependency; skipped when absent) for equal weights:
    its n_modes=(M, M) keeps rows -M/2..M/2-1 (fftshift-centred) x M/2+1 one-sided columns; ours keeps the symmetric
    band |k1| <= M/2-1 (no row -M/2) and, on an N = M grid, no Nyquist column. With neuraloperator's weights zero
    there, outputs and input gradients agree to float32 rounding (it computes in complex64 only), and the weight
    gradients of the shared modes map back."""
    pytest.importorskip("neuralop")
    from neuralop.layers.spectral_convolution import SpectralConv
    torch.manual_seed(C * N + M)
    m1, m2 = M // 2, M // 2 + 1
    held = min(m2, (N + 1) // 2)                                   # columns strictly below the grid's Nyquist
    conv = SpectralConv2d(C, C, m1, m2)
    no = SpectralConv(C, C, (M, M), bias=False)
    with torch.no_grad():
        R = conv.complex_weight()                                   # rows 0..m1-1, -(m1-1)..-1
        W = torch.zeros(M, m2, C, C, dtype=R.dtype)                 # neuraloperator: rows -m1..m1-1
        W[1:m1, :held], W[m1:, :held] = R[m1:, :held], R[:m1, :held]
        no.weight.tensor.copy_(W.permute(2, 3, 0, 1))
    x = torch.randn(2, C, N, N, requires_grad=True)
    y1, y2 = conv(x), no(x)
    torch.testing.assert_close(y1, y2, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(y1)
    gx1, gw1 = torch.autograd.grad(y1, (x, conv.weight), g)
    gx2, gw2 = torch.autograd.grad(y2, (x, no.weight.tensor), g)
    torch.testing.assert_close(gx1, gx2, atol=2e-6, rtol=1e-5)
    # neuraloperator's complex weight gradient (PyTorch convention: d/dRe + i d/dIm) in our real layout
    gw2 = gw2.permute(2, 3, 0, 1)                                   # [M, m2, Ci, Co], rows -m1..m1-1
    gw2 = torch.view_as_real(torch.cat([gw2[m1:], gw2[1:m1]]).contiguous())
    torch.testing.assert_close(gw1[:, :held], gw2[:, :held], atol=1e-5, rtol=1e-4)


# --- JVP-friendly layers: the nn layers with cheaper forward-mode rules -------------------------------------------
from noctcm.models.neural_operators import JVPConv2d, JVPGroupNorm, use_jvp_layers  # noqa: E402


def _twins(kind, **kw):
    torch.manual_seed(0)
    ref = (torch.nn.Conv2d if kind == "conv" else torch.nn.GroupNorm)(**kw).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    new = (JVPConv2d if kind == "conv" else JVPGroupNorm)(**kw).double()
    new.load_state_dict(ref.state_dict())
    return ref, new


LAYERS = [("conv", dict(in_channels=4, out_channels=6, kernel_size=3, padding=1)),
          ("conv", dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1, bias=False)),
          ("conv", dict(in_channels=4, out_channels=6, kernel_size=1, groups=2)),
          ("conv", dict(in_channels=4, out_channels=2, kernel_size=(3, 1), padding=(1, 0), dilation=(2, 1))),
          ("gn", dict(num_groups=2, num_channels=4)), ("gn", dict(num_groups=4, num_channels=4, eps=1e-3)),
          ("gn", dict(num_groups=1, num_channels=4, affine=False))]


@pytest.mark.parametrize("kind,kw", LAYERS)
def test_jvp_layers_equal_nn_layers(kind, kw):
    "Values, tangents (input only; input and parameters; parameters only), gradients and gradcheck of the twins."
    ref, new = _twins(kind, **kw)
    x, v = rand(2, 2, 4, 7, 6, seed=21)
    torch.testing.assert_close(new(x), ref(x), atol=1e-12, rtol=0)
    _, t1 = torch.func.jvp(ref, (x,), (v,))
    _, t2 = torch.func.jvp(new, (x,), (v,))
    torch.testing.assert_close(t2, t1, atol=1e-11, rtol=0)
    names = [n for n, _ in ref.named_parameters()]
    ps = tuple(p.detach() for p in ref.parameters())
    f = lambda m: (lambda x, *p: torch.func.functional_call(m, dict(zip(names, p)), (x,)))
    if ps:
        pd = tuple(rand(*p.shape, seed=30 + i) for i, p in enumerate(ps))
        for xt in (v, torch.zeros_like(v)):
            _, t1 = torch.func.jvp(f(ref), (x, *ps), (xt, *pd))
            _, t2 = torch.func.jvp(f(new), (x, *ps), (xt, *pd))
            torch.testing.assert_close(t2, t1, atol=1e-11, rtol=0)
    grads = []
    for m in (ref, new):
        xr = x.clone().requires_grad_()
        out = m(xr)
        grads.append(torch.autograd.grad(out, (xr, *m.parameters()), rand(*out.shape, seed=40)))
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)
    small = rand(1, 4, 4, 3, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(f(new), (small, *[p.clone().requires_grad_() for p in ps]))


def test_use_jvp_layers_on_the_unet_keeps_values_and_tangents():
    "The default-style U-Net (tiny) with every conv / group norm swapped: same outputs, same JVP, same state dict."
    import copy
    from noctcm.models.unet import UNetModel
    torch.manual_seed(0)
    net = UNetModel(in_channels=1, model_channels=8, channel_mult=(1, 2), attention_resolutions=(4,), fno_modes=2,
                    resolution=8).double()
    with torch.no_grad():
        net.out_conv.weight.normal_()   # zero-initialised in the U-Net; make the output depend on everything
    twin = copy.deepcopy(net)
    n = use_jvp_layers(twin)
    assert n > 10 and not any(type(m) in (torch.nn.Conv2d, torch.nn.GroupNorm) for m in twin.modules())
    assert twin.state_dict().keys() == net.state_dict().keys()
    x, v = rand(2, 2, 1, 8, 8, seed=3)
    t = torch.tensor([0.3, 1.2], dtype=F64)
    y1, j1 = torch.func.jvp(net, (x, t), (v, torch.ones_like(t)))
    y2, j2 = torch.func.jvp(twin, (x, t), (v, torch.ones_like(t)))
    torch.testing.assert_close(y2, y1, atol=1e-12, rtol=0)
    torch.testing.assert_close(j2, j1, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind,kw", LAYERS)
def test_jvp_layers_custom_path_gradients(kind, kw):
    """With a tangent present (dual input, grad enabled: the fused sCT pass) the layers run their own
    autograd.Function: primal gradients and tangents equal nn's; the Functions pass gradcheck / gradgradcheck."""
    import torch.autograd.forward_ad as fwAD
    from noctcm.models.neural_operators import _Conv2dFn, _GroupNormFn
    ref, new = _twins(kind, **kw)
    x, v = rand(2, 2, 4, 7, 6, seed=23)
    outs = []
    for m in (ref, new):
        xr = x.clone().requires_grad_()
        with fwAD.dual_level():
            y, ty = fwAD.unpack_dual(m(fwAD.make_dual(xr, v)))
        outs.append((ty.detach(), torch.autograd.grad(y.square().sum(), (xr, *m.parameters()))))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-11, rtol=0)
    for a, b in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)
    small = rand(1, 4, 4, 3, seed=6).requires_grad_()
    ps = [p.detach().clone().requires_grad_() for p in ref.parameters()]
    if kind == "conv":
        b = ps[1] if len(ps) > 1 else None
        f = lambda x, w, *bb: _Conv2dFn.apply(x, w, bb[0] if bb else None, new.stride, new.padding, new.dilation, new.groups)
    else:
        f = lambda x, *wb: _GroupNormFn.apply(x, new.num_groups, *(wb if wb else (None, None)), new.eps)[0]
    assert torch.autograd.gradcheck(f, (small, *ps))
    assert torch.autograd.gradgradcheck(f, (small, *ps))
