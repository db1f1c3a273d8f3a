"""The speed paths (issue #8) compute the same function as the plain ones.

- ``Upsample``'s folded transposed convolution equals nearest 2x + 3x3 conv (values and gradients),
  falls back where it must (odd target sizes, small grids), and its kernel cache follows weight
  changes (in-place edits, dtype casts).
- ``load_components`` (one header parse for all components) loads what ``load_component`` loads,
  and loading patches no process-wide state.
- ``AudioLDM.compile()`` keeps the UNet module and its state dict and matches eager; the UNet
  traces as one graph (no graph break at the folded upsamplers) that later calls reuse.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audioldm_core.checkpoint import COMPONENTS, load_component, load_components
from audioldm_core.layers import Upsample, fold_upsample_kernel
from conftest import rel_err


def _plain(up: Upsample, x: torch.Tensor, size=None) -> torch.Tensor:
    u = F.interpolate(x, scale_factor=2.0, mode="nearest") if size is None else F.interpolate(x, size=size)
    return up.conv(u)


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (2, 16, 16, 4), (3, 8, 33, 5), (1, 32, 64, 16)])
def test_folded_upsample_equals_nearest_then_conv(shape):
    torch.manual_seed(0)
    up = Upsample(shape[1]).eval()
    x = torch.randn(shape, dtype=torch.float64)
    up.double()
    with torch.no_grad():
        folded = F.conv_transpose2d(x, up.folded_weight(), up.conv.bias, stride=2, padding=1)
        err, rel = rel_err(folded, _plain(up, x))
    assert rel < 1e-13, f"float64 fold vs plain, {shape}: max abs {err:.2e}, rel {rel:.2e}"
    up.float()
    x = x.float()
    with torch.no_grad():
        err, rel = rel_err(up(x), _plain(up, x))
    print(f"\nfp32 Upsample {shape}: max abs {err:.2e}, rel {rel:.2e}")
    assert rel < 1e-5, f"fp32 Upsample vs plain, {shape}: max abs {err:.2e}, rel {rel:.2e}"


def test_upsample_size_argument_falls_back_when_not_2x():
    torch.manual_seed(0)
    up = Upsample(8).eval()
    x = torch.randn(1, 8, 16, 8)  # 128 pixels: the fold would apply to an exact 2x
    with torch.no_grad():
        odd = up(x, size=(31, 16))  # the UNet's odd-length skip: nearest to 31, not 2x then crop
        assert odd.shape == (1, 8, 31, 16)
        assert torch.equal(odd, _plain(up, x, size=(31, 16)))
        assert rel_err(up(x, size=(32, 16)), _plain(up, x))[1] < 1e-5


def test_small_grids_keep_the_plain_path():
    up = Upsample(4).eval()
    x = torch.randn(1, 4, 4, 4)  # 16 pixels < FOLD_MIN_PIXELS
    with torch.no_grad():
        assert torch.equal(up(x), _plain(up, x))


def test_folded_kernel_follows_loads_casts_and_clear():
    """The folded kernel is made once and reused; loading weights, moving/casting and clear_folded()
    forget it, so the next forward uses the current weight."""
    torch.manual_seed(0)
    up = Upsample(8).eval().requires_grad_(False)
    x = torch.randn(1, 8, 16, 8)
    first = up(x)
    kernel = up.folded_weight()
    assert up.folded_weight() is kernel  # reused, not refolded per call
    with torch.no_grad():
        up.conv.weight.mul_(-2.0)  # in place: the kernel is stale until cleared (documented)
    assert torch.equal(up(x), first)
    up.clear_folded()
    assert rel_err(up(x), _plain(up, x))[1] < 1e-5
    assert not torch.allclose(up(x), first)
    state = {k: v * 0.5 for k, v in up.state_dict().items()}
    up.load_state_dict(state, assign=True)
    assert rel_err(up(x), _plain(up, x))[1] < 1e-5
    up.double()
    assert up(x.double()).dtype == torch.float64
    assert rel_err(up(x.double()), _plain(up, x.double()))[1] < 1e-12


def test_fold_is_differentiable():
    torch.manual_seed(0)
    up = Upsample(4).double()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: F.conv_transpose2d(x, fold_upsample_kernel(w), None, stride=2,
                                                                   padding=1),
                                    (x[:, :, :3, :3].detach().requires_grad_(), up.conv.weight))
    up(x).square().sum().backward()
    g_fold = (x.grad.clone(), up.conv.weight.grad.clone())
    x.grad = None
    up.conv.weight.grad = None
    _plain(up, x).square().sum().backward()
    assert rel_err(g_fold[0], x.grad)[1] < 1e-12 and rel_err(g_fold[1], up.conv.weight.grad)[1] < 1e-12


def test_load_components_matches_load_component(converted_file):
    path = converted_file("tiny")
    info, modules = load_components(path)
    _, through_safetensors = load_components(path, mapped=False)  # the reader switch: same tensors
    assert set(modules) == set(COMPONENTS)
    for comp in COMPONENTS:
        one = load_component(path, comp).state_dict()
        many = modules[comp].state_dict()
        other = through_safetensors[comp].state_dict()
        assert one.keys() == many.keys() == other.keys()
        assert all(torch.equal(one[k], many[k]) and torch.equal(one[k], other[k]) for k in one), comp
    _, half = load_components(path, ["unet"], dtype=lambda c: torch.float16)
    assert set(half) == {"unet"} and next(half["unet"].parameters()).dtype == torch.float16


def test_compile_keeps_module_and_matches_eager(converted_file):
    from audioldm_core import AudioLDM

    pipe = AudioLDM.from_pretrained(converted_file("tiny"))
    unet = pipe.unet
    keys = list(unet.state_dict())
    x = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    emb = F.normalize(torch.randn(2, pipe.config.unet.class_embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    with torch.no_grad():
        eager = unet(x, torch.tensor([10, 900]), emb)
        pipe.compile()
        compiled = pipe.unet(x, torch.tensor([10, 900]), emb)
    assert pipe.unet is unet and list(unet.state_dict()) == keys
    err, rel = rel_err(compiled, eager)
    print(f"\ncompiled vs eager UNet (tiny): max abs {err:.2e}, rel {rel:.2e}")
    assert rel < 1e-5, f"compiled vs eager: max abs {err:.2e}, rel {rel:.2e}"


def test_compiled_unet_is_one_graph_and_never_recompiles():
    """The whole UNet forward is one dynamo frame, reused on later calls. The folded upsampler's kernel
    cache used to break the graph (``data_ptr`` in its key) and fail a guard on the second call (the
    cache had filled), so compiled runs were partly eager and paid a second compilation."""
    from torch._dynamo.testing import CompileCounter

    from audioldm_core import AudioLDM

    torch._dynamo.reset()
    pipe = AudioLDM.from_pretrained("tiny")
    x = torch.randn(2, 8, 32, 16, generator=torch.Generator().manual_seed(0))  # two folded upsamplers
    emb = F.normalize(torch.randn(2, pipe.config.unet.class_embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    counter = CompileCounter()
    try:
        with torch.no_grad():
            eager = pipe.unet(x, 500, emb)
            pipe.unet.compile(backend=counter)
            outs = [pipe.unet(x, 500, emb) for _ in range(3)]
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == 1, f"{counter.frame_count} frames compiled over 3 calls (graph breaks or recompiles)"
    for y in outs:
        err, rel = rel_err(y, eager)
        assert rel < 1e-6, f"traced vs eager: max abs {err:.2e}, rel {rel:.2e}"


def test_compile_turns_cpu_layout_optimisation_off_unless_asked(monkeypatch):
    """On the CPU, compile() passes inductor ``layout_optimization=False`` (measured slower here), keeps
    the caller's other inductor options, and leaves the caller's own choice or a ``mode`` alone."""
    from audioldm_core import AudioLDM

    pipe = AudioLDM.from_pretrained("tiny")
    seen = []
    monkeypatch.setattr(pipe.unet, "compile", lambda **kw: seen.append(kw))
    pipe.compile()
    pipe.compile(options={"freezing": True})
    pipe.compile(options={"layout_optimization": True})
    pipe.compile(mode="max-autotune")
    assert seen == [{"options": {"layout_optimization": False}},
                    {"options": {"freezing": True, "layout_optimization": False}},
                    {"options": {"layout_optimization": True}},
                    {"mode": "max-autotune"}]


def test_float16_on_cpu_warns(converted_file):
    from audioldm_core import AudioLDM

    with pytest.warns(UserWarning, match="float16 on the CPU is about 60x slower"):
        pipe = AudioLDM.from_pretrained(converted_file("tiny"), dtype=torch.float16)
    with pytest.warns(UserWarning, match="60x slower"):
        pipe.to(dtype=torch.float16)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.to(dtype=torch.float32)
        AudioLDM.from_pretrained(converted_file("tiny"), dtype=torch.bfloat16)


def test_loading_leaves_global_state_alone(converted_file):
    """Loading patches nothing process-wide: torch's initialisers, the layers' reset_parameters and the
    garbage collector are the same objects and state before, during (another thread builds a module
    meanwhile) and after a load, and that module is initialised exactly as usual."""
    import gc
    import threading

    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.GroupNorm, torch.nn.LayerNorm,
              torch.nn.Embedding)
    fills = ("uniform_", "normal_", "ones_", "zeros_", "constant_", "kaiming_uniform_", "xavier_uniform_")

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 2, 3), torch.nn.GroupNorm(1, 2),
                                   torch.nn.LayerNorm(3), torch.nn.Embedding(5, 2)).state_dict()

    def snapshot():
        return ({c: c.__dict__["reset_parameters"] for c in layers}, {n: getattr(torch.nn.init, n) for n in fills},
                gc.isenabled())

    expected, before = build(), snapshot()
    path = converted_file("tiny")
    other = {}
    t = threading.Thread(target=lambda: [other.update(build()) for _ in range(20)])
    t.start()
    load_components(path)
    t.join()
    assert snapshot() == before
    assert other.keys() == expected.keys() and all(torch.equal(other[k], expected[k]) for k in expected)
