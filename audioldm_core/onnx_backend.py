"""ONNX execution backends: our PyTorch modules exported to ONNX and run in ONNX Runtime or OpenVINO.

The PyTorch modules stay the source of truth; this is an execution path, like ``AudioLDM.compile()``.
:func:`apply` replaces ``pipe.clap``, ``pipe.unet``, ``pipe.vae`` and ``pipe.vocoder`` by thin
modules with the same call signatures (:class:`OrtUNet`, :class:`OrtVAE`, :class:`OrtVocoder`,
:class:`OrtTextEncoder`) whose forward runs a session of the exported graph in the chosen runtime
(:data:`RUNTIMES`: an ONNX Runtime ``InferenceSession``, or an OpenVINO CPU compiled model at f32
precision behind the same ``run(None, feeds)`` call); everything above the modules
(samplers, guidance, edits) runs unchanged. Each wrapper keeps the eager module as ``.eager`` (its
``parameters()``, ``state_dict()`` and attributes are the eager module's).

Graphs are exported from the eager modules with PyTorch's TorchScript exporter (opset
:data:`OPSET`), with a dynamic batch and time (or token) axis, so the graphs contain exactly what the
eager path computes: prompts padded only to the longest prompt, the folded 2x upsampler
(``layers.Upsample``). Python branches that depend on the length (whether an upsampler's input is
folded or sized to an odd skip, whether attention runs in chunks) are fixed in a traced graph, so
each graph is valid for a *plan*: the branch decisions of one class of lengths (:func:`unet_plan`,
:func:`vae_plan`). A new plan exports a new graph, once. Lengths whose VAE attention would run in
chunks (beyond ~29 s) decode eagerly, as do tiled decodes (``chunk_frames``).

Cache: one folder per graph under :func:`default_cache_dir` (``$AUDIOLDM_ONNX_CACHE``, else
``$XDG_CACHE_HOME/audioldm-core/onnx``, else ``~/.cache/audioldm-core/onnx``), named by a SHA-256 of
the component's weights (content), the component, its plan, the export settings, the source of the
model files and the torch/onnx versions. ``manifest.json`` holds the SHA-256 and size of every file
of the entry; an entry whose files do not match it (truncated, corrupted, missing) is rebuilt with a
warning, never loaded. Both runtimes load the same cached entries (the runtime is not part of the
key). Sessions use ``torch.get_num_threads()`` intra-op threads at creation (``--threads`` on the CLI
sets it) unless ``threads`` is given.

``onnx`` with ``onnxruntime`` (the ``[onnx]`` extra) or with ``openvino`` (the ``[openvino]`` extra)
are imported only here, each backend importing only its own runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .errors import InputError, MissingExtraError

OPSET = 17
CACHE_ENV = "AUDIOLDM_ONNX_CACHE"
# runtime (= backend name) -> what it imports and the extra that installs it
RUNTIMES = {"onnxruntime": ("onnxruntime", "pip install 'audioldm-core[onnx]'"),
            "openvino": ("openvino", "pip install 'audioldm-core[openvino]'")}
BACKENDS = ("torch", *RUNTIMES)
# ONNX Runtime graph optimisation levels by name
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}
# The model source files whose code the graphs are traced from: any change re-exports.
_MODEL_FILES = ("layers.py", "unet.py", "vae.py", "hifigan.py", "clap.py", "onnx_backend.py")
_GRAPH_FILE, _DATA_FILE, _MANIFEST = "model.onnx", "model.onnx.data", "manifest.json"


def _runtime(name: str):
    """Import ``onnx`` (to export) and the runtime ``name`` (a key of :data:`RUNTIMES`), or raise the one
    error naming its extra; returns the runtime's module."""
    import importlib

    module, extra = RUNTIMES[name]
    try:
        import onnx  # noqa: F401
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"the {name} backend needs {module} and onnx: {extra} "
                                f"({e.name or e} is not installed)") from None


def _ort():
    """Import onnxruntime and onnx, or raise the one error naming the ``[onnx]`` extra."""
    return _runtime("onnxruntime")


def check_backend(backend: Any, *, device: Any = "cpu", dtype: torch.dtype = torch.float32,
                  compile: bool = False, options: Optional[dict] = None) -> None:
    """Refuse, before any loading, a backend name other than :data:`BACKENDS`, and for an ONNX backend
    ("onnxruntime", "openvino") a device other than the CPU, a dtype other than float32,
    ``compile=True``, options :func:`check_options` refuses, or a missing extra."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    if backend not in RUNTIMES:
        if options:
            raise InputError(f"backend_options apply to the {' and '.join(RUNTIMES)} backends, not to {backend!r}")
        return
    check_options(backend, options or {})
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        raise InputError(f"the {backend} backend runs float32 on the CPU, got dtype={dtype} on device={device!r}")
    if compile:
        raise InputError(f"compile=True applies to the torch backend; give one of compile=True or backend={backend!r}")
    _runtime(backend)


def check_options(runtime: str, options: dict) -> None:
    """Refuse ``backend_options`` the ``runtime`` backend does not take: it takes ``cache_dir``,
    ``threads`` (a positive int) and ``components``; ONNX Runtime also ``optimization`` (one of
    "disable", "basic", "extended", "all") and ``spinning``. The runtime is chosen by ``backend=``."""
    ort_only = {"optimization", "spinning"}
    accepted = {"cache_dir", "threads", "components"} | (ort_only if runtime == "onnxruntime" else set())
    unknown = sorted(set(options) - accepted)
    if unknown:
        extra = "" if runtime == "onnxruntime" else " (optimization and spinning are ONNX Runtime's)"
        raise InputError(f"backend_options {unknown} do not apply to the {runtime} backend; it takes "
                         f"{', '.join(sorted(accepted))}{extra}; choose the runtime with backend=")
    bad = sorted(set(options.get("components", ())) - set(_WRAPPERS))
    if bad:
        raise InputError(f"unknown components {bad}; accepted: {sorted(_WRAPPERS)}")
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    if options.get("optimization", "all") not in _LEVELS:
        raise InputError(f"optimization must be one of {', '.join(_LEVELS)}, got {options['optimization']!r}")


def default_cache_dir() -> Path:
    """Where exported graphs are cached: ``$AUDIOLDM_ONNX_CACHE``, else ``$XDG_CACHE_HOME/audioldm-core/onnx``,
    else ``~/.cache/audioldm-core/onnx``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "audioldm-core" / "onnx"


@dataclass(frozen=True)
class SessionSettings:
    """Session options (not part of the cache key: they do not change the graph file).

    runtime: "onnxruntime" or "openvino" (:data:`RUNTIMES`).
    threads: intra-op threads (None: ``torch.get_num_threads()`` when the session is created).
    optimization: ORT graph optimisation level, one of "disable", "basic", "extended", "all" (ORT only).
    spinning: let idle intra-op threads spin between ops (ORT's default) or sleep (ORT only).
    """

    threads: Optional[int] = None
    optimization: str = "all"
    spinning: bool = True
    runtime: str = "onnxruntime"

    def create(self, path: Path):
        """A session for the graph file ``path`` with ``run(None, feeds) -> [numpy outputs]``."""
        if self.runtime == "openvino":
            return OpenVINOSession(path, self.threads or torch.get_num_threads())
        return _ort().InferenceSession(str(path), self.options(), providers=["CPUExecutionProvider"])

    def options(self):
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.optimization])
        so.intra_op_num_threads = self.threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.log_severity_level = 3
        return so


class OpenVINOSession:
    """An OpenVINO CPU compiled model behind ONNX Runtime's call: ``run(None, feeds)`` -> the outputs, as
    numpy arrays, in the graph's output order. Precision is pinned to f32 (on CPUs with bf16 units
    OpenVINO's default hint is bf16, which would break parity with the eager modules)."""

    def __init__(self, path: Path, threads: int):
        ov = _runtime("openvino")
        self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": int(threads),
                                                                   "INFERENCE_PRECISION_HINT": "f32"})
        self._request = self.compiled.create_infer_request()

    def run(self, output_names: None, feeds: dict) -> list[np.ndarray]:
        result = self._request.infer(feeds)
        return [result[port] for port in self.compiled.outputs]


# --- plans: the length-dependent branches a traced graph fixes ----------------------------------------


def _ceil_half(n: int) -> int:
    return -(-n // 2)


def unet_plan(unet: nn.Module, frames: int, bins: int) -> Optional[tuple]:
    """The UNet's length-dependent branches for latents (B, C, frames, bins), or None when attention
    would run in chunks (then the eager module runs). A tuple: per upsampler (deepest first), whether
    it takes the folded 2x path (``layers.Upsample.forward``: exact 2x and at least FOLD_MIN_PIXELS)."""
    from .layers import ATTN_CHUNK_ELEMENTS, Upsample

    cfg = unet.cfg
    sizes = [(frames, bins)]
    for _ in range(len(cfg.block_channels) - 1):  # stride-2, padding-1, 3x3 convolutions: ceil(n / 2)
        h, w = sizes[-1]
        sizes.append((_ceil_half(h), _ceil_half(w)))
    for (h, w), attn in zip(sizes, cfg.attn_levels):
        if attn and (h * w) ** 2 > ATTN_CHUNK_ELEMENTS:
            return None
    folds = []
    for k in range(len(sizes) - 1, 0, -1):
        (h, w), target = sizes[k], sizes[k - 1]
        folds.append(target == (2 * h, 2 * w) and h * w >= Upsample.FOLD_MIN_PIXELS)
    return tuple(folds)


def vae_plan(vae: nn.Module, frames: int, bins: int) -> Optional[tuple]:
    """The VAE decoder's branches for latents (B, C, frames, bins), or None when its mid-block attention
    would run in chunks. A tuple: per upsampler, whether it takes the folded path."""
    from .layers import ATTN_CHUNK_ELEMENTS, Upsample

    if (frames * bins) ** 2 > ATTN_CHUNK_ELEMENTS:
        return None
    levels = len(vae.cfg.block_channels) - 1
    return tuple(frames * bins * 4**i >= Upsample.FOLD_MIN_PIXELS for i in range(levels))


def vae_encoder_plan(vae: nn.Module, frames: int, bins: int) -> Optional[tuple]:
    """The VAE encoder's branches for a mel (B, 1, frames, bins): none but attention chunking at the
    bottom grid (asymmetric-pad stride-2 downsamplers: floor((n - 1) / 2) + 1 = ceil(n / 2))."""
    from .layers import ATTN_CHUNK_ELEMENTS

    for _ in range(len(vae.cfg.block_channels) - 1):
        frames, bins = _ceil_half(frames), _ceil_half(bins)
    return None if (frames * bins) ** 2 > ATTN_CHUNK_ELEMENTS else ()


# --- graphs: what is exported per component ------------------------------------------------------------


class _VAEDecodeGraph(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decoder(self.vae.post_quant_conv(z))


class _VAEEncodeGraph(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(mel)


class _VocoderGraph(nn.Module):
    def __init__(self, vocoder: nn.Module):
        super().__init__()
        self.vocoder = vocoder

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vocoder._vocode(mel)


@dataclass(frozen=True)
class _GraphSpec:
    """How one component is exported: the module to trace, input/output names, dynamic axes."""

    component: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic: dict


def _spec(component: str, eager: nn.Module) -> _GraphSpec:
    if component == "unet":
        return _GraphSpec(component, eager, ("x", "t", "class_emb"), ("eps",),
                          {"x": {0: "batch", 2: "frames"}, "t": {0: "batch"}, "class_emb": {0: "batch"},
                           "eps": {0: "batch", 2: "frames"}})
    if component == "vae_decoder":
        return _GraphSpec(component, _VAEDecodeGraph(eager), ("z",), ("mel",),
                          {"z": {0: "batch", 2: "frames"}, "mel": {0: "batch", 2: "mel_frames"}})
    if component == "vae_encoder":
        return _GraphSpec(component, _VAEEncodeGraph(eager), ("mel",), ("mean", "logvar"),
                          {"mel": {0: "batch", 2: "mel_frames"}, "mean": {0: "batch", 2: "frames"},
                           "logvar": {0: "batch", 2: "frames"}})
    if component == "vocoder":
        return _GraphSpec(component, _VocoderGraph(eager), ("mel",), ("audio",),
                          {"mel": {0: "batch", 1: "frames"}, "audio": {0: "batch", 1: "samples"}})
    if component == "text":
        return _GraphSpec(component, eager, ("input_ids", "attention_mask"), ("text_embeds",),
                          {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                           "text_embeds": {0: "batch"}})
    raise ValueError(f"unknown component {component!r}")


# --- the cache ----------------------------------------------------------------------------------------


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: every tensor's name, dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy() if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()


def _code_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _MODEL_FILES:
        h.update(name.encode() + b"\n" + (here / name).read_bytes())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _check_entry(folder: Path, key: dict) -> Optional[str]:
    """None when ``folder`` is a complete entry for ``key``, else what is wrong with it."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"manifest unreadable ({type(e).__name__})"
    if manifest.get("key") != key:
        return "manifest describes another graph"
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != meta.get("size"):
            return f"{name} has {size} bytes, the manifest says {meta.get('size')}"
        if _file_digest(path) != meta.get("sha256"):
            return f"{name}'s SHA-256 differs from the manifest's"
    if _GRAPH_FILE not in manifest.get("files", {}):
        return "manifest lists no graph"
    return None


def _export(spec: _GraphSpec, example: tuple, folder: Path) -> None:
    """Trace ``spec.module`` on ``example`` into ``folder``/model.onnx (+ one external data file)."""
    import onnx

    raw = folder / "raw"
    raw.mkdir()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the Python branches the plan fixes
        torch.onnx.export(spec.module, example, str(raw / _GRAPH_FILE), input_names=list(spec.inputs),
                          output_names=list(spec.outputs), dynamic_axes=spec.dynamic, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    model = onnx.load(str(raw / _GRAPH_FILE))  # one file of weights whatever size the graph has
    onnx.save_model(model, str(folder / _GRAPH_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=_DATA_FILE, size_threshold=1024)
    del model
    shutil.rmtree(raw)


class GraphCache:
    """Exported graphs on disk, one verified folder per key (see the module docstring).

    root: the cache folder (default :func:`default_cache_dir`). ``exports`` counts the graphs this
    object exported (tests use it to tell a cache hit from a rebuild).
    """

    def __init__(self, root: Union[str, os.PathLike, None] = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.exports = 0

    @staticmethod
    def key(component: str, weights: str, plan: tuple) -> dict:
        import onnx

        return {"component": component, "weights_sha256": weights, "plan": list(plan), "opset": OPSET,
                "exporter": "torchscript", "dtype": "float32", "torch": torch.__version__,
                "onnx": onnx.__version__, "code_sha256": _code_digest()}

    def folder(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / f"{key['component']}-{digest}"

    def get(self, spec: _GraphSpec, key: dict, example: Callable[[], tuple]) -> Path:
        """The verified graph file for ``key``, exported from ``spec`` on ``example()`` when absent or bad."""
        folder = self.folder(key)
        if folder.exists():
            problem = _check_entry(folder, key)
            if problem is None:
                return folder / _GRAPH_FILE
            warnings.warn(f"ONNX cache entry {folder} is not usable ({problem}); exporting it again", stacklevel=4)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{folder.name}-"))
        try:
            _export(spec, example(), tmp)
            files = {name: {"size": (tmp / name).stat().st_size, "sha256": _file_digest(tmp / name)}
                     for name in (_GRAPH_FILE, _DATA_FILE) if (tmp / name).exists()}
            (tmp / _MANIFEST).write_text(json.dumps({"key": key, "files": files}, indent=1, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.exports += 1
        return folder / _GRAPH_FILE


# --- the wrappers ------------------------------------------------------------------------------------


class _OrtModule(nn.Module):
    """Holds the eager module (``.eager``), the cache, and one session per plan, created on first use.
    Attributes the wrapper lacks are the eager module's."""

    component = ""

    def __init__(self, eager: nn.Module, cache: GraphCache, session: SessionSettings):
        super().__init__()
        self.eager = eager
        self._cache, self._settings = cache, session
        self._sessions: dict[tuple, Any] = {}
        self._weights: Optional[str] = None
        self.graphs: dict[tuple, Path] = {}  # (component, plan) -> the graph file its session runs

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules") or {}
            if "eager" not in modules:
                raise
            return getattr(modules["eager"], name)

    def state_dict(self, *args, **kwargs):
        """The eager module's state dict (the wrapper adds no tensors)."""
        return self.eager.state_dict(*args, **kwargs)

    def _check_runtime(self) -> None:
        p = next(self.eager.parameters())
        if p.device.type != "cpu" or p.dtype != torch.float32:
            raise InputError(f"the {self._settings.runtime} backend runs float32 on the CPU; this {self.component} is "
                             f"{p.dtype} on {p.device} (load without backend= to use another device or dtype)")

    def session(self, component: str, plan: tuple, example: Callable[[], tuple]):
        """The session for ``component`` at ``plan`` (graph cached on disk, exported if needed)."""
        key = (component, plan)
        if key not in self._sessions:
            from .memory import release_clean_pages

            _runtime(self._settings.runtime)
            if self._weights is None:
                self._weights = weights_digest(self.eager)
            graph_key = self._cache.key(component, self._weights, plan)
            path = self._cache.get(_spec(component, self.eager), graph_key, example)
            self.graphs[key] = path
            self._sessions[key] = self._settings.create(path)
            release_clean_pages(self.eager)  # the session holds its own copy of the weights
        return self._sessions[key]


def _run(session, feeds: dict) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feeds)]


def _np32(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


class OrtUNet(_OrtModule):
    """``UNet`` on ONNX Runtime: x (B, C, T, F), t scalar or (B,), class_emb (B, P) -> (B, C, T, F) float32."""

    component = "unet"

    def forward(self, x: torch.Tensor, t: Union[torch.Tensor, int, float], class_emb: torch.Tensor) -> torch.Tensor:
        self._check_runtime()
        unet = self.eager
        unet._check(x, class_emb)
        b = x.shape[0]
        t = torch.as_tensor(t)
        if t.ndim == 0:
            t = t[None]
        if t.ndim != 1 or t.shape[0] not in (1, b):
            raise InputError(f"timesteps must be a scalar or (B,) = ({b},), got shape {tuple(t.shape)}")
        t = t.expand(b).float()
        plan = unet_plan(unet, x.shape[2], x.shape[3])
        if plan is None:
            return unet(x, t, class_emb)
        sess = self.session("unet", plan, lambda: (x.float(), t, class_emb.float()))
        return _run(sess, {"x": _np32(x), "t": _np32(t), "class_emb": _np32(class_emb)})[0].to(x.device)


class OrtVAE(_OrtModule):
    """``VAE`` with ``encode`` and one-pass ``decode`` on ONNX Runtime (tiled decodes and lengths whose
    attention runs in chunks use the eager module); ``sample`` and attributes are the VAE's."""

    component = "vae"

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, 1, T, 64) -> (mean, logvar), each (B, 8, T/4, 16); as ``VAE.encode``."""
        self._check_runtime()
        vae = self.eager
        vae._check(mel, vae.cfg.in_channels, "mel")
        plan = vae_encoder_plan(vae, mel.shape[2], mel.shape[3])
        if plan is None:
            return vae.encode(mel)
        sess = self.session("vae_encoder", plan, lambda: (mel.float(),))
        mean, logvar = _run(sess, {"mel": _np32(mel)})
        return mean, logvar

    def decode(self, z: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Unscaled latents z (B, 8, t, 16) -> mel (B, 1, 4t, 64); as ``VAE.decode``."""
        self._check_runtime()
        vae = self.eager
        vae._check(z, vae.cfg.latent_channels, "latents")
        plan = vae_plan(vae, z.shape[2], z.shape[3])
        if chunk_frames is not None or plan is None:
            return vae.decode(z, chunk_frames)
        sess = self.session("vae_decoder", plan, lambda: (z.float(),))
        return _run(sess, {"z": _np32(z)})[0]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Round trip through the posterior mean: mel (B, 1, T, 64) -> mel (B, 1, T, 64)."""
        return self.decode(self.encode(mel)[0])


class OrtVocoder(_OrtModule):
    """``HiFiGAN`` on ONNX Runtime: mel (B, T, n_mels) or (T, n_mels) -> waveform, as ``HiFiGAN.forward``
    (``chunk_frames`` tiles run through the same session)."""

    component = "vocoder"

    def forward(self, mel: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        self._check_runtime()
        from .hifigan import HiFiGAN

        return HiFiGAN.forward(self, mel, chunk_frames)  # its checks and tiling, with our _vocode

    def _vocode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, n_mels) -> (B, samples), one pass."""
        sess = self.session("vocoder", (), lambda: (x.float(),))
        return _run(sess, {"mel": _np32(x)})[0].to(x.dtype)


class OrtTextEncoder(_OrtModule):
    """``ClapTextEncoder`` on ONNX Runtime: (input_ids, attention_mask) (B, L) int64 -> (B, projection_dim)."""

    component = "text"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self._check_runtime()
        clap = self.eager
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            return clap(input_ids, attention_mask)  # raises the eager module's error
        if input_ids.shape[1] > clap.cfg.max_positions - clap.cfg.pad_token_id - 1:
            return clap(input_ids, attention_mask)
        ids, mask = input_ids.long().cpu(), attention_mask.long().cpu()
        sess = self.session("text", (), lambda: (ids, mask))
        return _run(sess, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]


_WRAPPERS = {"clap": OrtTextEncoder, "unet": OrtUNet, "vae": OrtVAE, "vocoder": OrtVocoder}


def apply(pipe, cache_dir: Union[str, os.PathLike, None] = None, threads: Optional[int] = None,
          components: Sequence[str] = ("clap", "unet", "vae", "vocoder"), **session: Any):
    """Run ``pipe``'s components on ONNX Runtime, or OpenVINO with ``runtime="openvino"`` (in place;
    returns ``pipe``).

    Each named component (``clap``, ``unet``, ``vae``, ``vocoder``) is replaced by its wrapper; graphs
    are exported or loaded from the cache on first use at each plan. cache_dir: default
    :func:`default_cache_dir`. threads: intra-op threads (default ``torch.get_num_threads()`` when a
    session is created). ``session``: further :class:`SessionSettings` fields (``runtime``, ...).
    """
    runtime = session.pop("runtime", "onnxruntime")
    if runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}")
    check_options(runtime, dict(session, threads=threads, components=components))
    settings = SessionSettings(threads=threads, runtime=runtime, **session)
    _runtime(settings.runtime)
    if pipe.device.type != "cpu" or pipe.dtype != torch.float32:
        raise InputError(f"the {settings.runtime} backend runs float32 on the CPU, got {pipe.dtype} on {pipe.device}")
    cache = GraphCache(cache_dir)
    for comp in components:
        current = getattr(pipe, comp)
        if isinstance(current, _OrtModule):
            current = current.eager
        setattr(pipe, comp, _WRAPPERS[comp](current, cache, settings))
    pipe.prompt_encoder.model = pipe.clap
    pipe.prompt_encoder.clear_cache()
    return pipe


def exports(pipe) -> int:
    """How many graphs the backend of ``pipe`` exported (0: every graph came from the cache)."""
    caches = {id(m._cache): m._cache for m in (pipe.clap, pipe.unet, pipe.vae, pipe.vocoder)
              if isinstance(m, _OrtModule)}
    return sum(c.exports for c in caches.values())


__all__ = ["BACKENDS", "RUNTIMES", "GraphCache", "OpenVINOSession", "check_backend", "check_options", "OrtTextEncoder", "OrtUNet", "OrtVAE", "OrtVocoder", "SessionSettings",
           "apply", "default_cache_dir", "exports", "unet_plan", "vae_plan", "weights_digest"]
