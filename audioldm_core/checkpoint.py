"""Our checkpoint format: one self-contained, strictly loaded ``.safetensors`` file.

Layout of a file:
  tensors   ``clap.*``, ``unet.*``, ``vae.*``, ``vocoder.*``: each component's state dict under its
            prefix, names exactly as our modules name them; optionally ``clap_audio.*``, the CLAP
            audio tower of an original ``.ckpt`` (config in ``clap_audio_config``; read only when
            used, by ``clap_file.py``).
  metadata  (all values are strings, as safetensors requires)
            ``format``            ``"audioldm-core"``
            ``format_version``    ``"1"``
            ``config``            :class:`~audioldm_core.config.AudioLDMConfig` as JSON
            ``tokenizer``         JSON ``{"vocab": {token: id}, "merges": ["a b", ...]}``
            ``source``            JSON: where the weights came from (repo id or path, revision,
                                  file hashes)
            ``converter_version`` the audioldm-core version that wrote the file
            ``checksums``         JSON ``{component: sha256}`` over that component's tensors (sorted
                                  names, each name, dtype, shape and raw bytes), plus ``"metadata"``:
                                  sha256 over the other metadata entries (:func:`metadata_checksum`);
                                  see :func:`verify`

Saving writes a temporary file in the destination folder and renames it into place, so a reader
never sees a half-written file. Loading is memory-mapped (safetensors ``safe_open``) and strict:
every tensor of a component is consumed, every parameter and buffer is filled, shapes and dtypes
are checked, and any mismatch raises :class:`CheckpointError` naming the keys.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .config import AudioLDMConfig
from .errors import CheckpointError, ConfigError, InputError, SourceNotFoundError, key_problems, name_list
from .files import atomic_write

FORMAT = "audioldm-core"
FORMAT_VERSION = "1"

# component name -> (module, class). Each class is built from its own config dataclass, which is the
# attribute of AudioLDMConfig with the same name as the component.
COMPONENTS: dict[str, tuple[str, str]] = {
    "clap": ("audioldm_core.clap", "ClapTextEncoder"),
    "unet": ("audioldm_core.unet", "UNet"),
    "vae": ("audioldm_core.vae", "VAE"),
    "vocoder": ("audioldm_core.hifigan", "HiFiGAN"),
}

# Components a file may carry or not: the CLAP audio tower (audioldm_core/clap_file.py), which only
# a conversion from an original .ckpt has; loaded on first use, never by load_components.
OPTIONAL_COMPONENTS = ("clap_audio",)
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

PathLike = Union[str, os.PathLike]


def check_component(name: str) -> None:
    """Raise :class:`InputError` unless ``name`` is one of :data:`COMPONENTS`."""
    if name not in COMPONENTS:
        raise InputError(f"unknown component {name!r}; choose one of {', '.join(COMPONENTS)}")


def component_class(name: str) -> type:
    """The module class of a component (imported on first use)."""
    check_component(name)
    module, cls = COMPONENTS[name]
    return getattr(importlib.import_module(module), cls)


def build_component(name: str, config: AudioLDMConfig, *, device: Any = "cpu",
                    dtype: torch.dtype = torch.float32) -> nn.Module:
    """A freshly initialised component (random weights from torch's default init)."""
    cls = component_class(name)
    return cls(getattr(config, name)).to(device=device, dtype=dtype)


def empty_component(name: str, config: AudioLDMConfig) -> nn.Module:
    """A component on the ``meta`` device: shapes only, no memory (torch's initialisers run on meta
    tensors, which allocate nothing)."""
    cls = component_class(name)
    with torch.device("meta"):
        return cls(getattr(config, name))


def expected_shapes(name: str, config: AudioLDMConfig) -> dict[str, torch.Size]:
    """Our state-dict names and shapes for one component (what a converter must produce)."""
    return {k: v.shape for k, v in empty_component(name, config).state_dict().items()}


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], component: str, *,
                      device: Any = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Fill a (meta-device or real) module from ``state`` strictly and return it in eval mode with
    gradients off.

    Every key of ``state`` must be a parameter or persistent buffer of ``module`` with the same shape
    and the same kind of dtype (floating or not), and every one of them must be given; floating
    tensors are cast to ``dtype``, all are moved to ``device``, then assigned with
    ``load_state_dict(strict=True, assign=True)``. Raises :class:`CheckpointError` naming the
    offending keys (sorted, capped, with a count).
    """
    slots = module.state_dict(keep_vars=True)
    unexpected = set(state) - set(slots)
    missing = set(slots) - set(state)
    both = sorted(set(state) & set(slots))
    shapes = [f"{k}: {tuple(state[k].shape)} but the model needs {tuple(slots[k].shape)}"
              for k in both if tuple(state[k].shape) != tuple(slots[k].shape)]
    bad_dtype = [f"{k}: {state[k].dtype}" for k in both
                 if state[k].is_floating_point() != slots[k].is_floating_point()]
    problems = key_problems({"unexpected key(s)": unexpected, "missing key(s)": missing,
                             "shape mismatch(es)": shapes, "tensor(s) of the wrong kind of dtype": bad_dtype})
    if problems:
        raise CheckpointError(f"{component}: " + "; ".join(problems))
    cast = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device=device)
            for k, v in state.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    # A tensor no checkpoint holds (a non-persistent buffer) would stay on the meta device; ours have none.
    unfilled = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if unfilled:
        raise CheckpointError(f"{component}: tensors not filled by the checkpoint: {name_list(unfilled)}")
    return module.eval().requires_grad_(False)


# --- Writing ----------------------------------------------------------------------------------------

def save_checkpoint(path: PathLike, tensors: Mapping[str, Mapping[str, torch.Tensor]],
                    config: AudioLDMConfig, tokenizer: Mapping[str, Any],
                    source: Mapping[str, Any], *, dtype: Optional[torch.dtype] = None,
                    extra_metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write one checkpoint file atomically.

    tensors: component name -> our state dict for it (all four components, and optionally
        :data:`OPTIONAL_COMPONENTS`, whose config goes in ``extra_metadata``: see ``clap_file.py``).
    tokenizer: ``{"vocab": {token: id}, "merges": [str]}``.
    source: JSON-able description of where the weights came from.
    dtype: cast floating tensors to this dtype (default: keep).
    """
    from safetensors.torch import save_file

    from . import __version__

    missing = set(COMPONENTS) - set(tensors)
    if missing:
        raise InputError(f"save_checkpoint needs all components; missing {sorted(missing)}")
    flat: dict[str, torch.Tensor] = {}
    for comp, state in tensors.items():
        if comp not in OPTIONAL_COMPONENTS:
            check_component(comp)
        for k, v in state.items():
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            flat[f"{comp}.{k}"] = v.detach().to("cpu").contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "tokenizer": json.dumps(dict(tokenizer), sort_keys=True, ensure_ascii=False),
        "source": json.dumps(dict(source), sort_keys=True),
        "converter_version": __version__,
        **dict(extra_metadata or {}),
    }
    checksums = component_checksums(flat) | {"metadata": metadata_checksum(metadata)}
    metadata["checksums"] = json.dumps(checksums, sort_keys=True)
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))
    return path


def component_checksums(flat: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """SHA-256 per component over its tensors: sorted names, then each name, dtype, shape and bytes."""
    hashes = {}
    for key in sorted(flat):
        comp = key.split(".", 1)[0]
        h = hashes.setdefault(comp, hashlib.sha256())
        t = flat[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{str(t.dtype)}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return {c: h.hexdigest() for c, h in hashes.items()}


def metadata_checksum(meta: Mapping[str, str]) -> str:
    """SHA-256 over every metadata entry but ``checksums`` (sorted keys; each key and its exact string)."""
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != "checksums"):
        h.update(f"{len(key)}:{key}|{len(meta[key])}:".encode() + meta[key].encode())
    return h.hexdigest()


# --- Reading ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file's header says: config, tokenizer, source, and the tensor names."""

    path: Path
    config: AudioLDMConfig
    tokenizer: dict[str, Any]
    source: dict[str, Any]
    converter_version: str
    keys: tuple[str, ...]


MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def safetensors_header(path: PathLike) -> dict[str, Any]:
    """Parse and sanity-check a ``.safetensors`` header before any tensor is touched.

    Refuses (with :class:`CheckpointError`): a header length that is larger than the file or than
    100 MiB, JSON that is not an object, and duplicate keys (which JSON parsers silently collapse).
    """
    return _read_header(Path(path))[0]


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """(header, byte offset where the tensor data starts), checked as :func:`safetensors_header` says."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a readable safetensors file: {size} bytes, too short for a header")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER):
            raise CheckpointError(f"{path} is not a readable safetensors file: header length {n} exceeds "
                                  f"the file ({size} bytes) or the 100 MiB limit")
        raw = f.read(n)

    def no_duplicates(pairs):
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set = set()
            dup = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
            raise CheckpointError(f"{path} is not a readable safetensors file: duplicate header keys {name_list(dup)}")
        return out

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: bad header JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a readable safetensors file: header is not a JSON object")
    return header, 8 + n


def _open(path: Path):
    return _open_with_header(path)[0]


def _open_with_header(path: Path):
    """(safe_open handle, our strictly parsed header, data start offset). safe_open validates the layout
    (offsets, sizes, dtypes) itself; ours adds the duplicate-key and size limits
    (:func:`safetensors_header`)."""
    from safetensors import safe_open

    if not path.is_file():
        raise SourceNotFoundError(f"checkpoint file {path} does not exist")
    header, data_start = _read_header(path)
    try:
        return safe_open(str(path), framework="pt", device="cpu"), header, data_start
    except Exception as e:  # safetensors raises its own error type (or OSError) on a bad header
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def _mapped_states(path: Path, header: Mapping[str, Any], base: int, names: list[str]
                   ) -> Optional[dict[str, dict[str, torch.Tensor]]]:
    """The tensors of components ``names`` as views into one copy-on-write mapping of the file: the
    same mapping safetensors' reader makes, without its per-tensor Python cost (the measured gain is
    in ``benchmarks/RESULTS.md``, "Loading and memory mechanisms"). Call only after ``safe_open``
    accepted the file; sizes and bounds are checked again here. Returns None when a tensor cannot be
    viewed in place (an unknown dtype, an offset not aligned to its dtype's size); the caller then
    reads through safetensors. ``base``: where the data starts."""
    size = path.stat().st_size
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    states: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    for key, entry in header.items():
        comp, _, rest = key.partition(".")
        if key == "__metadata__" or comp not in states:
            continue
        dt = _SAFETENSORS_DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
        if dt is None:
            return None
        (a, b), shape = entry["data_offsets"], entry["shape"]
        if (base + a) % dt.itemsize:
            return None
        if b - a != math.prod(shape) * dt.itemsize or a < 0 or base + b > size:
            raise CheckpointError(f"{path}: tensor {key}: data offsets {a}..{b} do not fit its shape "
                                  f"{shape} ({entry['dtype']}) inside the file")
        states[comp][rest] = torch.empty(0, dtype=dt).set_(storage, (base + a) // dt.itemsize, shape)
    return states


def _json_meta(meta: Mapping[str, str], key: str, path: Path) -> Any:
    if key not in meta:
        raise CheckpointError(f"{path}: metadata entry {key!r} is missing")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata entry {key!r} is not valid JSON: {e}") from None


def read_info(path: PathLike) -> CheckpointInfo:
    """Read and validate a checkpoint's header without loading any tensor."""
    path = Path(path)
    with _open(path) as f:
        meta = f.metadata() or {}
        keys = tuple(f.keys())
    return _info_from(path, meta, keys)


def _info_from(path: Path, meta: Mapping[str, str], keys: tuple[str, ...]) -> CheckpointInfo:
    """Validate a checkpoint's metadata and tensor names (see :func:`read_info`)."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an audioldm-core checkpoint (metadata format="
                              f"{meta.get('format')!r}); convert a cvssp folder with audioldm-convert")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r} is not supported; "
                              f"this audioldm-core reads version {FORMAT_VERSION}")
    try:
        config = AudioLDMConfig.from_dict(_json_meta(meta, "config", path))
    except ConfigError as e:
        raise CheckpointError(f"{path}: bad config in metadata: {e}") from None
    tokenizer = _json_meta(meta, "tokenizer", path)
    source = _json_meta(meta, "source", path)
    if not isinstance(tokenizer, dict) or not isinstance(source, dict):
        raise CheckpointError(f"{path}: metadata entries 'tokenizer' and 'source' must be JSON objects")
    stray = sorted(k for k in keys if k.split(".", 1)[0] not in COMPONENTS and k.split(".", 1)[0] not in OPTIONAL_COMPONENTS)
    if stray:
        raise CheckpointError(f"{path}: {len(stray)} tensor(s) outside the known components "
                              f"{list(COMPONENTS)}: {name_list(stray)}")
    return CheckpointInfo(path=path, config=config, tokenizer=tokenizer, source=source,
                          converter_version=meta.get("converter_version", ""), keys=keys)


def read_component_state(path: PathLike, name: str) -> dict[str, torch.Tensor]:
    """One component's tensors from a checkpoint file, under our names (prefix removed)."""
    check_component(name)
    path = Path(path)
    with _open(path) as f:
        return _states_from(f, path, [name])[name]


def _states_from(f, path: Path, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors of the components ``names`` from an open ``safe_open`` handle, each under our names.

    safetensors maps the file (copy-on-write) instead of reading it: a tensor's pages become resident
    when first used, so weights a run never touches (the VAE encoder in text-to-audio, the unused rows
    of the word embedding) cost no memory."""
    states: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    for key in f.keys():
        comp, _, rest = key.partition(".")
        if comp in states:
            try:
                states[comp][rest] = f.get_tensor(key)
            except Exception as e:
                raise CheckpointError(f"{path}: tensor {key} cannot be read: {e}") from None
    return states


def load_components(path: PathLike, names: Optional[Sequence[str]] = None, *, device: Any = "cpu",
                    dtype: Any = torch.float32, mapped: bool = True) -> tuple[CheckpointInfo, dict[str, nn.Module]]:
    """Read a checkpoint's header once and load several components from it (default: all four).

    dtype: one dtype for all, or a callable ``component name -> dtype``.
    mapped: read the tensors as views into one mapping of the file (:func:`_mapped_states`); False
        reads them through safetensors' ``safe_open().get_tensor``. Both give the same tensors, both
        memory-mapped (copy-on-write).
    Returns (info, {name: module}), each module strict-loaded as :func:`load_component` does.
    """
    path = Path(path)
    names = list(COMPONENTS if names is None else names)
    for n in names:
        check_component(n)
    handle, header, data_start = _open_with_header(path)
    with handle as f:
        info = _info_from(path, f.metadata() or {}, tuple(f.keys()))
        states = _mapped_states(path, header, data_start, names) if mapped else None
        if states is None:
            states = _states_from(f, path, names)
    modules = {n: load_state_strict(empty_component(n, info.config), states.pop(n), n, device=device,
                                    dtype=dtype(n) if callable(dtype) else dtype)
               for n in names}
    return info, modules


def load_component(path: PathLike, name: str, *, device: Any = "cpu",
                   dtype: torch.dtype = torch.float32, info: Optional[CheckpointInfo] = None) -> nn.Module:
    """Load one component (``"clap"``, ``"unet"``, ``"vae"`` or ``"vocoder"``) from our file.

    Only that component's tensors are read. The module is in eval mode with gradients off.
    """
    check_component(name)
    info = info or read_info(path)
    module = empty_component(name, info.config)
    return load_state_strict(module, read_component_state(path, name), name, device=device, dtype=dtype)


def verify(path: PathLike) -> list[str]:
    """Re-check a checkpoint file's integrity; returns a list of problems (empty when OK).

    Checks the header and metadata (as :func:`read_info`), that every component's tensor names and
    shapes are exactly what its config builds, and each component's checksum and the metadata's
    (config, tokenizer, source) against the ones recorded at conversion. Loading checks only what
    it needs to load (header, names, shapes, dtypes), not these checksums.
    """
    path = Path(path)
    try:
        info = read_info(path)
    except (CheckpointError, SourceNotFoundError) as e:
        return [str(e)]
    problems = []
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    try:
        recorded = json.loads(meta.get("checksums", "null"))
    except json.JSONDecodeError:
        recorded = None
    if not isinstance(recorded, dict):
        problems.append("metadata entry 'checksums' is missing or not a JSON object")
        recorded = {}
    for comp in COMPONENTS:
        try:
            state = read_component_state(path, comp)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        want = {k: tuple(v) for k, v in expected_shapes(comp, info.config).items()}
        have = {k: tuple(v.shape) for k, v in state.items()}
        if want != have:
            missing, extra = set(want) - set(have), set(have) - set(want)
            wrong = [k for k in set(want) & set(have) if want[k] != have[k]]
            problems.append(f"{comp}: tensors do not match its config (missing {name_list(missing)}; "
                            f"unexpected {name_list(extra)}; wrong shape {name_list(wrong)})")
        got = component_checksums({f"{comp}.{k}": v for k, v in state.items()}).get(comp)
        if comp in recorded and recorded[comp] != got:
            problems.append(f"{comp}: checksum mismatch (recorded {recorded[comp][:12]}..., "
                            f"computed {str(got)[:12]}...): the tensor data changed after conversion")
        elif comp not in recorded:
            problems.append(f"{comp}: no recorded checksum")
    for comp in OPTIONAL_COMPONENTS:  # present or not; when present, its checksum must hold
        with safe_open(str(path), framework="pt", device="cpu") as f:
            flat = {k: f.get_tensor(k) for k in f.keys() if k.startswith(comp + ".")}
        if flat and recorded.get(comp) != component_checksums(flat).get(comp):
            problems.append(f"{comp}: checksum mismatch or missing: the tensor data changed after conversion")
    if recorded.get("metadata") != metadata_checksum(meta):
        problems.append("metadata (config, tokenizer, source): checksum missing or mismatched: the "
                        "metadata changed after conversion")
    return problems
