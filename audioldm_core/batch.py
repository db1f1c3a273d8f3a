"""The resumable batch: a prompts file in, one audio file per item and a JSONL manifest out.

One code path plans the items (defaults, per-item seeds, output names), reads and appends the
manifest and decides what a re-run skips; an *executor* only turns pending items into records:

- ``engine="local"``: this process, one item after another;
- ``engine="ray"``: a pool of Ray actors, each loading the model once (extra ``[ray]``; ``ray`` is
  imported only when this engine runs).

The contract, whichever engine runs:

- Item ``i`` (its position among the file's non-blank lines) gets seed ``base_seed + i`` unless its
  line gives ``"seed"``, and the file name ``{i:04d}-{slug}.{fmt}`` unless it gives ``"output"`` (a
  path under the output folder, checked with the others before any work: a bad one stops the run);
  ``n > 1`` numbers the files ``-0``, ``-1``, ... An item's audio depends only on its settings and
  the model (not on which worker made it), given the same device and thread count.
- Each output is written atomically (temp file + rename) by whoever generated it.
- The manifest ``manifest.jsonl`` in the output folder has one writer, the process that called
  :func:`run`; it appends one whole JSON line (fsynced) per finished item.
- A re-run skips items whose outputs all exist (recording any the manifest is missing), removes
  the temp files a killed run left beside pending outputs, and generates the rest.
- A line that fails deterministically (unreadable JSON, a bad value, a length or prompt the model
  refuses) is recorded as ``{"failed": true, "error": ...}`` and the others go on; a re-run tries it
  again. Any other error (a full disk, a lost cluster) stops the run; what was written stays.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from .errors import AudioLDMError, InputError, MissingExtraError, SourceNotFoundError

ENGINES = ("local", "ray")
MANIFEST = "manifest.jsonl"
ITEM_KEYS = ("prompt", "seed", "seconds", "steps", "guidance", "negative", "sampler", "n", "compat", "candidates",
             "output")

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Defaults:
    """Run-wide settings: what an item's line does not give. ``seed`` is the base seed (item ``i``
    gets ``seed + i``)."""

    seed: int
    seconds: float = 5.12
    steps: int = 10
    guidance: float = 2.5
    negative: Optional[str] = None
    sampler: str = "ddim"
    n: int = 1
    compat: str = "diffusers"
    candidates: int = 1


@dataclass(frozen=True)
class ModelSpec:
    """How each executor loads the model and makes items: everything a worker needs, as plain data.
    ``spectrogram``: also write ``OUT.png`` (its log-mel picture, extra ``[ui]``) beside each output.
    ``backend``: the execution backend (``AudioLDM.from_pretrained``); ``window_s``, ``overlap_s``,
    ``loop``: the long-form options of every item (:mod:`audioldm_core.longform`)."""

    model: str
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    allow_long: bool = False
    spectrogram: bool = False
    clap: Optional[str] = None
    backend: str = "torch"
    window_s: Any = "auto"
    overlap_s: float = 1.28
    loop: bool = False


@dataclass(frozen=True)
class Item:
    """One planned line. ``settings`` holds the generation keywords (prompt, seed, seconds, steps,
    guidance, negative, sampler, n, compat); ``outputs`` the file names in the output folder.
    ``error`` is set (and the rest may be empty) when the line itself is bad."""

    index: int
    line: int
    settings: dict = field(default_factory=dict)
    outputs: tuple = ()
    error: Optional[str] = None


@dataclass
class Result:
    """What :func:`run` did: counts, the manifest, and the records appended in this run."""

    generated: int
    skipped: int
    failed: int
    manifest: Path
    records: list


# --- Reading and planning ---------------------------------------------------------------------------

def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe, lower-case form of a prompt (``"audio"`` if nothing is left)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:limit].rstrip("-") or "audio"


def numbered(path: Path, n: int) -> list[Path]:
    """``path`` itself for one waveform, else ``stem-0.ext``, ``stem-1.ext``, ..."""
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(n)]


def read_prompt_file(path: PathLike) -> list[dict[str, Any]]:
    """Parse a prompts file: plain lines (one prompt each; blank lines skipped) or JSONL objects.

    Returns one dict per non-blank line with its 1-based ``_line``; a line that is not a valid item
    carries ``_error`` (what is wrong) instead of being refused, so the other lines still run. A
    missing or empty file raises :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item: dict[str, Any] = {"_line": lineno}
        if line.lstrip().startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError as e:
                item["_error"] = f"invalid JSON: {e}"
            else:
                unknown = set(parsed) - set(ITEM_KEYS) if isinstance(parsed, dict) else set()
                if not isinstance(parsed, dict):
                    item["_error"] = "a JSON line must be an object"
                elif unknown:
                    item["_error"] = f"unknown keys {sorted(unknown)}; allowed {sorted(ITEM_KEYS)}"
                elif not isinstance(parsed.get("prompt"), str):
                    item["_error"] = "\"prompt\" must be a string"
                else:
                    item.update(parsed)
        else:
            item["prompt"] = line.strip()
        items.append(item)
    if not items:
        raise InputError(f"prompts file {path} has no prompts")
    return items


def _int(v: Any, key: str, low: int, high: Optional[int] = None) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise InputError(f"\"{key}\" must be an integer {bound}, got {v!r}")
    return v


def _number(v: Any, key: str, positive: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise InputError(f"\"{key}\" must be a {'positive ' if positive else ''}finite number, got {v!r}")
    return float(v)


def _settings(raw: dict, index: int, d: Defaults) -> dict:
    """The generation settings of one parsed line, checked (raises :class:`InputError`)."""
    from .compat import COMPAT_MODES
    from .samplers import SAMPLERS

    s = {
        "prompt": raw["prompt"],
        "seed": _int(raw.get("seed", d.seed + index), "seed", 0, 2**63),
        "seconds": _number(raw.get("seconds", d.seconds), "seconds", True),
        "steps": _int(raw.get("steps", d.steps), "steps", 1),
        "guidance": _number(raw.get("guidance", d.guidance), "guidance", False),
        "negative": raw.get("negative", d.negative),
        "sampler": raw.get("sampler", d.sampler),
        "n": _int(raw.get("n", d.n), "n", 1),
        "compat": raw.get("compat", d.compat),
        "candidates": _int(raw.get("candidates", d.candidates), "candidates", 1),
    }
    if s["negative"] is not None and not isinstance(s["negative"], str):
        raise InputError(f"\"negative\" must be a string, got {s['negative']!r}")
    if s["sampler"] not in SAMPLERS:
        raise InputError(f"\"sampler\" must be one of {', '.join(SAMPLERS)}, got {s['sampler']!r}")
    if s["compat"] not in COMPAT_MODES:
        raise InputError(f"\"compat\" must be one of {', '.join(COMPAT_MODES)}, got {s['compat']!r}")
    return s


def plan(prompts: PathLike, defaults: Defaults, fmt: str = "wav") -> list[Item]:
    """Every non-blank line of ``prompts`` as an :class:`Item`: its settings and output names, or
    the error that makes it a bad line (a name another line already uses is one)."""
    items: list[Item] = []
    owner: dict[str, int] = {}
    for i, raw in enumerate(read_prompt_file(prompts)):
        line = raw["_line"]
        try:
            if "_error" in raw:
                raise InputError(raw["_error"])
            settings = _settings(raw, i, defaults)
            name = raw.get("output")
            if name is None:
                name = f"{i:04d}-{slug(settings['prompt'])}.{fmt}"
            elif not isinstance(name, str) or not name:
                raise InputError(f"\"output\" must be a file name, got {name!r}")
            outputs = tuple(str(p) for p in numbered(Path(name), settings["n"]))
            taken = [o for o in outputs if o in owner]
            if taken:
                raise InputError(f"output {taken[0]} is already the output of line {owner[taken[0]]}")
        except InputError as e:
            items.append(Item(i, line, {"prompt": raw.get("prompt")} if isinstance(raw.get("prompt"), str) else {},
                              error=f"{prompts}:{line}: {e}"))
            continue
        owner.update((o, line) for o in outputs)
        items.append(Item(i, line, settings, outputs))
    return items


# --- The manifest -----------------------------------------------------------------------------------

def append_line(path: PathLike, record: dict) -> None:
    """Append one whole JSON line and fsync, so a crash never leaves a half line behind a full one. A
    line a crash cut short (no newline at the end of the file) is ended first, so it cannot swallow
    this record; readers skip it."""
    data = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def recorded_outputs(manifest: PathLike) -> set[str]:
    """The output names the manifest records as written (failed records list none)."""
    recorded: set[str] = set()
    manifest = Path(manifest)
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash is ignored and its item redone or re-recorded
            if isinstance(rec, dict) and not rec.get("failed"):
                recorded.update(rec.get("outputs", []))
    return recorded


def failed_record(item: Item, error: str, model: str) -> dict:
    """The manifest line of an item that could not be made."""
    return dict(item.settings, line=item.line, outputs=[], model=model, failed=True, error=error)


# --- Generating one item (shared by every executor) --------------------------------------------------

def load_pipeline(spec: ModelSpec, threads: Optional[int] = None, *, quiet: bool = False) -> tuple[Any, float]:
    """Load the model of ``spec`` (setting torch's thread count first if given); returns
    ``(pipe, seconds)``. A missing source raises :class:`SourceNotFoundError` with the offline hint."""
    import torch

    from .pipeline import AudioLDM

    if threads:
        torch.set_num_threads(threads)
    try:  # an unknown or absent device: one clear error before any loading
        torch.empty(0, device=spec.device)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"--device {spec.device!r} cannot be used here: {str(e).splitlines()[0]}") from None
    if spec.model == "tiny" and not quiet:
        print("note: model 'tiny' has seeded random weights: the audio is noise, not sound "
              "(use --model with a converted file, a cvssp folder or a Hub repo id for real audio)",
              file=sys.stderr)
    t0 = time.perf_counter()
    try:
        pipe = AudioLDM.from_pretrained(spec.model, device=spec.device, dtype=getattr(torch, spec.dtype),
                                        compile=spec.compile, clap=spec.clap, backend=spec.backend)
    except SourceNotFoundError as e:
        raise SourceNotFoundError(f"{e}; for an offline demo use --model tiny (random weights)") from None
    return pipe, time.perf_counter() - t0


def generate_audio(pipe, *, prompt: str, seed: int, seconds: float, steps: int, guidance: float,
                   negative: Optional[str], sampler: str, n: int, progress: bool = False, allow_long: bool = False,
                   compat: str = "diffusers", candidates: int = 1, **long: Any):
    """``n`` waveforms (n, samples) float32 for one prompt, noise from ``torch.Generator().manual_seed(seed)``.
    long: ``window_s``, ``overlap_s``, ``loop`` (:mod:`audioldm_core.longform`); the pipeline's defaults if absent."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = pipe(prompt, audio_length_in_s=seconds, num_inference_steps=steps, guidance_scale=guidance,
               negative_prompt=negative, num_waveforms_per_prompt=n, generator=gen, sampler=sampler,
               progress=progress, allow_long=allow_long, compat=compat, num_candidates=candidates, **long)
    return out.audios


def make_item(pipe, item: Item, folder: PathLike, fmt: str, spec: ModelSpec, *, progress: bool = False) -> dict:
    """Generate one item, write its outputs atomically into ``folder`` and return its manifest record.

    A deterministic failure (an :class:`AudioLDMError` from the pipeline, e.g. a length it refuses)
    returns a failed record instead of raising; other errors propagate."""
    from .audio import write_audio

    t0 = time.perf_counter()
    try:
        audios = generate_audio(pipe, **item.settings, progress=progress, allow_long=spec.allow_long,
                                window_s=spec.window_s, overlap_s=spec.overlap_s, loop=spec.loop)
    except AudioLDMError as e:
        return failed_record(item, str(e), spec.model)
    for name, a in zip(item.outputs, audios):
        write_audio(Path(folder) / name, a, pipe.sample_rate, fmt)
        if spec.spectrogram:
            from .plot import write_spectrogram

            write_spectrogram((Path(folder) / name).with_suffix(".png"), a, prompt=item.settings["prompt"],
                              seed=item.settings["seed"])
    return dict(item.settings, line=item.line, outputs=list(item.outputs), model=spec.model,
                model_hash=pipe.model_hash(), sample_rate=pipe.sample_rate, dtype=spec.dtype, device=spec.device,
                generation_seconds=round(time.perf_counter() - t0, 3))


# --- The Ray executor ---------------------------------------------------------------------------------
# A pool of plain Ray actors (BatchWorker), each holding one loaded model. The driver (the process in
# run()) keeps one item in flight per actor, hands the next item to whichever actor finishes, and
# appends each returned record to the manifest itself, so the manifest has one writer; each actor
# writes its item's outputs atomically into the shared folder with make_item, as the local executor.
#
# Plain actors rather than Ray Data map_batches: with one item per call there is nothing to batch, the
# records stream back to the one manifest writer as each finishes (ray.wait), and neither an Arrow
# conversion of the audio nor pyarrow is needed. Faults are Ray's actor fault tolerance: actors are
# created with max_restarts = max_task_retries = RETRIES, so a worker process killed mid-item
# (ray.kill, SIGKILL, OOM) is restarted, reloads the model on its next item, and the item is retried;
# the killed write leaves at most a temp file, never a partial output, and run() removes such temp
# files at the end. An actor that dies more often than that is dropped and its item goes to the others.
# `ray` is imported only in _import_ray (extra [ray]).

RETRIES = 3  # restarts of one actor, and retries of one item after its actor died


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the Ray engine needs the optional extra [ray]: pip install 'audioldm-core[ray]'") from None
    return ray


class BatchWorker:
    """One worker: loads the model once (torch set to ``threads`` CPU threads) and makes items.

    A plain class; :func:`_ray_execute` wraps it with ``ray.remote``. ``folder`` and the model path are
    checked where the worker runs, since every node must reach them under the same path."""

    def __init__(self, spec: ModelSpec, folder: str, fmt: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.spec, self.folder, self.fmt = spec, Path(folder), fmt
        self.pipe = None

    def where(self) -> str:
        """``host:pid`` of this worker, as recorded in the manifest."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def load(self) -> dict:
        """Check the output folder and the model path on this node and load the model."""
        here = f"Ray worker {self.where()}"
        if not self.folder.is_dir() or not os.access(self.folder, os.W_OK):
            raise InputError(f"{here}: output folder {self.folder} is not a writable folder on this node; every "
                             f"node must reach the output folder under the same path (shared storage)")
        model = self.spec.model
        if os.path.isabs(model) and not os.access(model, os.R_OK):
            raise SourceNotFoundError(f"{here}: cannot read the model {model} on this node; the model path must "
                                      f"be readable by every node (shared storage, or the same file on each)")
        try:
            self.pipe, seconds = load_pipeline(self.spec, quiet=True)
        except AudioLDMError as e:
            raise type(e)(f"{here}: cannot load the model {model}: {e}; the model must be loadable on every "
                          f"node") from None
        return {"worker": self.where(), "load_seconds": round(seconds, 3), "model_hash": self.pipe.model_hash()}

    def make(self, item: Item) -> dict:
        """Generate and write one item; its manifest record (``worker`` added)."""
        if self.pipe is None:  # a restarted actor loads on its first item
            self.load()
        rec = make_item(self.pipe, item, self.folder, self.fmt, self.spec)
        rec["worker"] = self.where()
        return rec


def _cause(ray, e: Exception) -> Exception:
    """The exception a worker raised, without Ray's wrapper (its message is what the user needs)."""
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(getattr(e, "cause", None), Exception):
        return e.cause
    return e


def _ray_check(workers: int, threads_per_worker: int, gpus_per_worker: float) -> Any:
    """Check the Ray engine's options and that ``ray`` imports; returns the module."""
    for value, name in ((workers, "workers"), (threads_per_worker, "threads per worker")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) or not gpus_per_worker >= 0:
        raise InputError(f"GPUs per worker must be a number >= 0 (a fraction shares a GPU), got {gpus_per_worker!r}")
    return _import_ray()


def _ray_execute(ray, pending: list[Item], folder: Path, fmt: str, spec: ModelSpec, *, address: Optional[str],
                 workers: int, threads_per_worker: int, gpus_per_worker: float,
                 log: Callable[[str], None]) -> Iterator[dict]:
    """Make ``pending`` on ``workers`` Ray actors; yields each item's record as it finishes (in
    completion order). Joins the cluster at ``address``, or starts a local runtime on 127.0.0.1 (None),
    unless this process already runs one; a runtime started here is shut down at the end.
    With ``gpus_per_worker`` > 0 the device defaults to ``cuda`` (Ray gives each actor its GPUs)."""
    if not pending:
        return
    need = workers * threads_per_worker
    if address is None and not ray.is_initialized() and need > (os.cpu_count() or 1):
        raise InputError(f"a local Ray runtime has {os.cpu_count()} CPUs; {workers} workers x {threads_per_worker} "
                         f"threads need {need}: lower --workers or --threads-per-worker")
    started = not ray.is_initialized()
    if started and address is None:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    elif started:
        ray.init(address=address, log_to_driver=False)
    actors = []
    try:
        total = ray.cluster_resources()
        if address is None and (need > total.get("CPU", 0) or workers * gpus_per_worker > total.get("GPU", 0)):
            raise InputError(f"the Ray runtime has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs; "
                             f"{workers} workers x {threads_per_worker} threads, {gpus_per_worker:g} GPUs each "
                             f"need more: lower --workers, --threads-per-worker or --gpus-per-worker")
        log(f"ray: {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs; {workers} workers x "
            f"{threads_per_worker} threads, {gpus_per_worker:g} GPUs each")
        if gpus_per_worker > 0 and spec.device == "cpu":
            spec = replace(spec, device="cuda")
        actor_class = ray.remote(num_cpus=threads_per_worker, num_gpus=gpus_per_worker, max_restarts=RETRIES,
                                 max_task_retries=RETRIES)(BatchWorker)
        run_id = uuid.uuid4().hex[:8]  # actor names, for Ray's dashboard and `ray.get_actor`
        names = [f"audioldm-batch-{run_id}-{k}" for k in range(workers)]
        actors = [actor_class.options(name=name).remote(spec, str(folder), fmt, threads_per_worker) for name in names]
        try:
            for name, info in zip(names, ray.get([a.load.remote() for a in actors])):
                log(f"ray: worker {name} ({info['worker']}) loaded the model in {info['load_seconds']:.1f} s")
        except ray.exceptions.RayTaskError as e:
            raise _cause(ray, e) from None
        except ray.exceptions.RayActorError as e:
            raise AudioLDMError(f"a Ray worker died {RETRIES + 1} times while loading the model: {e}") from None
        queue = deque(pending)
        inflight: dict = {}  # object ref -> (actor, item)

        def feed() -> None:
            busy = {id(a) for a, _ in inflight.values()}
            for a in actors:
                if queue and id(a) not in busy:
                    item = queue.popleft()
                    inflight[a.make.remote(item)] = (a, item)

        feed()
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            actor, item = inflight.pop(ref)
            try:
                rec = ray.get(ref)
            except ray.exceptions.RayActorError:  # died more often than RETRIES: drop it, the others go on
                actors.remove(actor)
                queue.appendleft(item)
                log(f"ray: a worker died {RETRIES + 1} times; {len(actors)} left")
                if not actors:
                    raise AudioLDMError("every Ray worker died; what was written is kept and a re-run goes on")
            except ray.exceptions.RayTaskError as e:
                raise _cause(ray, e) from None
            else:
                yield rec
            feed()
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
        if started:
            ray.shutdown()


# --- Executors ---------------------------------------------------------------------------------------

def _local(pending: list[Item], folder: Path, fmt: str, spec: ModelSpec, *, threads: Optional[int],
           progress: bool, quiet: bool) -> Iterable[dict]:
    """Today's batch: this process loads the model on the first pending item and makes them in order."""
    pipe = None
    for item in pending:
        if pipe is None:
            pipe, _ = load_pipeline(spec, threads, quiet=quiet)
        yield make_item(pipe, item, folder, fmt, spec, progress=progress)


def _output_folder(output: PathLike) -> Path:
    from .files import check_output_folder

    folder = Path(output)
    if not folder.exists() and folder.parent.is_dir():
        folder.mkdir()
    return check_output_folder(folder)


def run(prompts: PathLike, output: PathLike = "out", *, model: str = "cvssp/audioldm-s-full-v2",
        seed: Optional[int] = None, seconds: float = 5.12, steps: int = 10, guidance: float = 2.5,
        negative: Optional[str] = None, sampler: str = "ddim", n: int = 1, compat: str = "diffusers",
        candidates: int = 1, clap: Optional[str] = None, format: str = "wav", device: str = "cpu",
        dtype: str = "float32", compile: bool = False, allow_long: bool = False, threads: Optional[int] = None,
        engine: str = "local", address: Optional[str] = None, workers: int = 2, threads_per_worker: int = 1,
        gpus_per_worker: float = 0.0, progress: bool = False, spectrogram: bool = False, backend: str = "torch",
        window_s: Any = "auto", overlap_s: float = 1.28, loop: bool = False,
        log: Optional[Callable[[str], None]] = print) -> Result:
    """Run (or resume) the batch of ``prompts`` into the folder ``output``; see the module docstring.

    engine: ``"local"`` (this process; ``threads`` sets torch's thread count) or ``"ray"`` (``workers``
    actors with ``threads_per_worker`` CPUs and ``gpus_per_worker`` GPUs each; ``address`` joins a
    running cluster, None starts a local Ray runtime on 127.0.0.1, and a Ray runtime this process
    already started is used as it is). With Ray, ``model`` and ``output`` must be readable (and the
    output writable) under the same path on every node: each worker checks and fails clearly.
    spectrogram: also write each output's log-mel picture beside it as ``.png`` (extra ``[ui]``).
    log: called with one line per finished item and a summary (None: silent).
    Returns a :class:`Result`; bad input (a missing prompts file, an unwritable folder, an unknown
    engine) raises :class:`InputError` before any model is loaded.
    """
    from .audio import format_for
    from .files import check_output_path, remove_stale_temp_files

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    fmt = format_for(f"x.{format}")
    if seed is None:
        seed = random.randrange(2**31)
    defaults = Defaults(seed=_int(seed, "seed", 0, 2**63), seconds=_number(seconds, "seconds", True),
                        steps=_int(steps, "steps", 1), guidance=_number(guidance, "guidance", False),
                        negative=negative, sampler=sampler, n=_int(n, "n", 1), compat=compat,
                        candidates=_int(candidates, "candidates", 1))
    items = plan(prompts, defaults, fmt)
    folder = _output_folder(output)
    ray = _ray_check(workers, threads_per_worker, gpus_per_worker) if engine == "ray" else None
    if spectrogram:
        from .plot import _figure_class

        _figure_class()  # the [ui] extra is there, before any model work
    say = log or (lambda _: None)
    if engine == "ray" and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())  # the same absolute path on every node
    spec = ModelSpec(model=str(model), device=device, dtype=dtype, compile=compile, allow_long=allow_long,
                     spectrogram=spectrogram, clap=clap, backend=backend, window_s=window_s, overlap_s=overlap_s,
                     loop=loop)

    manifest = folder / MANIFEST
    recorded = recorded_outputs(manifest)
    records: list[dict] = []

    def record(rec: dict) -> None:
        append_line(manifest, rec)
        records.append(rec)

    skipped = 0
    pending: list[Item] = []
    for item in items:  # every output path, before any work or manifest line: a bad one stops the run
        for o in item.outputs:
            try:
                check_output_path(folder / o, "audio")
            except InputError as e:
                raise InputError(f"{prompts}:{item.line}: {e}") from None
    for item in items:
        if item.error is not None:
            say(f"failed: {item.error}")
            record(failed_record(item, item.error, spec.model))
            continue
        paths = [folder / o for o in item.outputs]
        if all(p.exists() for p in paths):
            skipped += 1
            if not set(item.outputs) <= recorded:  # finished before a crash cut the manifest line
                record(dict(item.settings, line=item.line, outputs=list(item.outputs), model=spec.model,
                            recovered=True))
            continue
        for p in paths:  # a run killed while writing this item left its temp files: not ours to keep
            remove_stale_temp_files(p)
        pending.append(item)

    if engine == "local":
        results = _local(pending, folder, fmt, spec, threads=threads, progress=progress, quiet=log is None)
    else:
        results = _ray_execute(ray, pending, folder.resolve(), fmt, spec, address=address, workers=workers,
                               threads_per_worker=threads_per_worker, gpus_per_worker=gpus_per_worker,
                               log=say)
    generated = 0
    by_line = {item.line: k for k, item in enumerate(items)}
    for rec in results:
        record(rec)
        where = f"[{by_line[rec['line']] + 1}/{len(items)}]"
        if rec.get("failed"):
            say(f"{where} failed: line {rec['line']}: {rec['error']}")
        else:
            generated += 1
            worker = f" on {rec['worker']}" if "worker" in rec else ""
            say(f"{where} wrote {', '.join(str(folder / o) for o in rec['outputs'])} in "
                f"{rec['generation_seconds']:.1f} s{worker}")
    if engine == "ray":  # a worker killed mid-write left a temp file; every worker is done now
        for item in pending:
            for o in item.outputs:
                remove_stale_temp_files(folder / o)
    failed = sum(1 for r in records if r.get("failed"))
    say(f"batch: {generated} generated, {skipped} already present"
        + (f", {failed} failed (see the manifest)" if failed else "") + f"; manifest {manifest}")
    return Result(generated, skipped, failed, manifest, records)


__all__ = ["BatchWorker", "Defaults", "ENGINES", "Item", "ModelSpec", "RETRIES", "Result", "append_line",
           "generate_audio", "load_pipeline", "make_item", "numbered", "plan", "read_prompt_file", "recorded_outputs",
           "run", "slug"]
