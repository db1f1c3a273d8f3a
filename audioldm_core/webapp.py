"""The local web app (``audioldm serve``): one page with a tab per mode (text-to-audio, style
transfer, inpainting, super-resolution, and CLAP variation when the model carries its CLAP audio
tower), built with Gradio (the optional extra ``[ui]``, imported
only here).

Contract:
- One model is loaded once per server (:func:`serve`) and shared by every tab. All generations go
  through one Gradio queue group (``concurrency_id="model"``): ``concurrency`` run at a time
  (default 1), the rest wait in order.
- Every result shows audio player(s), download files (WAV or FLAC), the log-mel picture
  (:mod:`audioldm_core.plot`), the exact settings including the seed, and the equivalent
  ``audioldm ...`` command, which reproduces the same samples (same seeded generator, same call).
- Progress is reported per denoising step. "Stop" marks the caller's session; the step callback
  raises at the next step, so the model is free again after at most one step.
- Bad input (an :class:`~audioldm_core.errors.AudioLDMError`) is shown in the page as one message;
  any other exception is shown as one message too and the server keeps serving.
- Tabs are data (:data:`TABS`): each names the pipeline capability it needs, so a mode a pipeline
  does not have is not shown, and a new mode is one more entry. The text tab always has the
  long-form controls (window, overlap, loop); its "candidates" control (best-of-N by CLAP score) is
  shown only when a CLAP audio tower is attached, and the variation tab only when that tower is
  the model's own (``pipe.clap_audio_source == "checkpoint"``).

Binding: 127.0.0.1 by default. A non-local host lets anyone who can reach the port generate with the
model (CPU/GPU time), upload audio files to the server's temporary folder and download results;
there is no login. Gradio's analytics, share links and server-side rendering are off.
"""


import json
import os
import random
import shlex
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .errors import AudioLDMError, InputError, MissingExtraError

MAX_WAVEFORMS = 4  # audio players in the text-to-audio tab
MAX_SECONDS = 60.0  # longest request the page accepts
MAX_STEPS = 500  # most denoising steps the page accepts
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
OVERLAP_S = 1.28  # the pipeline's default long-form overlap (longform.OVERLAP_S; the CLI omits it)


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise MissingExtraError("the web app needs gradio: pip install 'audioldm-core[ui]'") from None
    return gr


class Cancelled(Exception):
    """Raised inside the step callback when the caller pressed Stop."""


@dataclass(frozen=True)
class Tab:
    """A tab of the page: its title, the pipeline capability it needs (see :func:`capabilities`),
    and the method of :class:`WebApp` that builds it."""

    title: str
    requires: str
    build: str


TABS = (
    Tab("Text to audio", "text", "_text_tab"),
    Tab("Style transfer", "transfer", "_transfer_tab"),
    Tab("Inpainting", "inpaint", "_inpaint_tab"),
    Tab("Super-resolution", "super_resolve", "_superres_tab"),
    Tab("Variation", "variation", "_variation_tab"),
)
MAX_CANDIDATES = 8  # most candidates per waveform the page accepts


def capabilities(pipe) -> set[str]:
    """The modes ``pipe`` offers: "text" (it is callable), the names of its public edit methods
    (``transfer``, ``inpaint``, ``super_resolve``), "candidates" when a CLAP audio tower is attached
    (any source: it scores), and "variation" when it has the method and the tower is the model's
    own (``clap_audio_source == "checkpoint"``: only that one drives the UNet). Reads the pipeline's
    attributes only: an attached tower is not loaded."""
    caps = {"text"} if callable(pipe) else set()
    for name in ("transfer", "inpaint", "super_resolve"):
        if callable(getattr(pipe, name, None)):
            caps.add(name)
    source = getattr(pipe, "clap_audio_source", None)
    if "text" in caps and source is not None:
        caps.add("candidates")
    if callable(getattr(pipe, "variation", None)) and source == "checkpoint":
        caps.add("variation")
    return caps


def _number(value: Any, name: str, *, low: float, high: float, integer: bool = False) -> float:
    if value is None or value == "":
        raise InputError(f"{name} is empty; give a number in [{low:g}, {high:g}]")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not low <= v <= high or v != v:
        raise InputError(f"{name} must be in [{low:g}, {high:g}], got {v:g}")
    if integer:
        if v != int(v):
            raise InputError(f"{name} must be a whole number, got {v:g}")
        return int(v)
    return v


def _seconds(value: Any) -> float:
    v = _number(value, "seconds", low=0, high=MAX_SECONDS)
    if v <= 0:
        raise InputError(f"seconds must be more than 0 (up to {MAX_SECONDS:g}), got {v:g}")
    return v


def _prompt(text: Any, required: bool = True) -> str:
    text = (text or "").strip()
    if required and not text:
        raise InputError("the prompt is empty; describe the sound you want")
    return text


def _seed(value: Any) -> int:
    if value is None or value == "" or float(value) < 0:
        return random.randrange(2**31)
    return int(_number(value, "seed", low=0, high=2**63 - 1, integer=True))


def _window(value: Any) -> Any:
    """The window box: "auto" (or empty), "none", or seconds -> "auto", None or a float."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "auto"):
        return "auto"
    if text == "none":
        return None
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"window must be 'auto', 'none' or seconds (a multiple of 0.04, e.g. 10.24), "
                         f"got {value!r}") from None
    if not 0 < v <= MAX_SECONDS:
        raise InputError(f"window must be more than 0 and at most {MAX_SECONDS:g} s, got {v:g}")
    return v


def _input_audio(path: Optional[str]) -> tuple[np.ndarray, str]:
    from .audio import load_audio

    if not path:
        raise InputError("no input audio; upload a file or record one")
    name = Path(path).name
    try:
        waveform, info = load_audio(path)
    except AudioLDMError as e:  # name the file the user gave, not the server's copy
        raise InputError(str(e).replace(str(path), name)) from None
    if len(waveform) <= 512:
        raise InputError(f"the input audio is too short ({info.duration:.3f} s); give at least 0.04 s")
    if len(waveform) > MAX_SECONDS * 16000:
        raise InputError(f"the input audio is {info.duration:.1f} s long; the page accepts up to {MAX_SECONDS:g} s")
    return waveform, name


def command_line(command: str, settings: dict, model: str, output: str) -> str:
    """The ``audioldm`` command that reproduces ``settings`` (as shown in the page)."""
    args = ["audioldm", command]
    if command in ("transfer", "inpaint", "superres", "variation"):
        args.append(settings["input"])
    if command not in ("superres", "variation") or settings.get("prompt"):
        if command in ("superres", "variation"):
            args.append("--prompt")
        args.append(settings["prompt"])
    if command == "variation" and settings.get("prompt"):
        args += ["--text-weight", f"{settings['text_weight']:g}"]
    args += ["--model", model]
    if command in ("generate", "variation"):
        args += ["--seconds", f"{settings['seconds']:g}"]
    if command == "generate":
        if settings["n"] != 1:
            args += ["-n", str(settings["n"])]
        if settings.get("candidates", 1) != 1:
            args += ["--candidates", str(settings["candidates"])]
        window = settings.get("window", "auto")
        if window != "auto":
            args += ["--window", "none" if window is None else f"{window:g}"]
        if settings.get("overlap", OVERLAP_S) != OVERLAP_S:
            args += ["--overlap", f"{settings['overlap']:g}"]
        if settings.get("loop"):
            args.append("--loop")
    if command == "transfer":
        args += ["--strength", f"{settings['strength']:g}"]
    if command == "inpaint":
        args += ["--start", f"{settings['start']:g}", "--end", f"{settings['end']:g}"]
    if command == "superres" and settings.get("cutoff") is not None:
        args += ["--cutoff", f"{settings['cutoff']:g}"]
    args += ["--steps", str(settings["steps"]), "--guidance", f"{settings['guidance']:g}",
             "--sampler", settings["sampler"], "--seed", str(settings["seed"])]
    if settings.get("negative"):
        args += ["--negative", settings["negative"]]
    if settings.get("device", "cpu") != "cpu":
        args += ["--device", settings["device"]]
    if settings.get("dtype", "float32") != "float32":
        args += ["--dtype", settings["dtype"]]
    if settings.get("clap"):
        args += ["--clap", settings["clap"]]
    if settings.get("threads"):  # the thread count changes float sums, so it is part of reproducing the bits
        args += ["--threads", str(settings["threads"])]
    args += ["-o", output]
    if command != "variation":  # `audioldm variation` writes no picture
        args.append("--spectrogram")
    return shlex.join(args)


class WebApp:
    """The page's state: the loaded pipeline, its name for the command line, the output folder, the
    sessions that pressed Stop, and a semaphore bounding concurrent model use.

    ``build()`` returns the ``gr.Blocks``; the caller launches it."""

    def __init__(self, pipe, model: str, *, concurrency: int = 1, out_dir: Optional[Path] = None,
                 device: str = "cpu", dtype: str = "float32", clap: Optional[str] = None,
                 threads: Optional[int] = None):
        self.pipe = pipe
        self.model, self.clap, self.threads = model, clap, threads
        self.device, self.dtype = device, dtype
        self.concurrency = int(concurrency)
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="audioldm-serve-"))
        self.caps = capabilities(pipe)
        self._stopped: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.concurrency)
        self._count = 0

    # --- running one request -------------------------------------------------------------------------

    def _session(self, request) -> str:
        return getattr(request, "session_hash", None) or "default"

    def stop(self, request=None) -> None:
        """Mark the caller's session: its running generation raises at its next step."""
        with self._lock:
            self._stopped.add(self._session(request))

    def _callback(self, session: str, total: int, progress) -> Callable:
        def cb(step: int, timestep: Any, latents: Any) -> None:
            with self._lock:
                if session in self._stopped:
                    raise Cancelled()
            if progress is not None:
                progress((min(step + 1, total), total), desc="denoising", unit="steps")
        return cb

    def _run(self, request, fn: Callable[[str], Any]) -> Any:
        """Run ``fn(session)`` under the model semaphore, after clearing an earlier Stop of the session."""
        session = self._session(request)
        with self._lock:
            self._stopped.discard(session)
        with self._slots:
            return fn(session)

    def safe(self, fn: Callable, *args) -> Any:
        """Call ``fn(*args)``; any failure becomes one ``gr.Error`` message shown in the page."""
        gr = _gradio()
        try:
            return fn(*args)
        except Cancelled:
            raise gr.Error("stopped", print_exception=False) from None
        except AudioLDMError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - the server keeps serving; the page shows one line
            print(f"audioldm serve: request failed: {type(e).__name__}: {e}", file=sys.stderr)
            raise gr.Error(f"internal error: {type(e).__name__}: {e}") from None

    def _name(self, stem: str, seed: int, fmt: str) -> Path:
        """A fresh numbered folder per result, so names never collide: ``NNNNN/STEM-SEED.FMT``."""
        with self._lock:
            self._count += 1
            k = self._count
        folder = self.out_dir / f"{k:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{stem}-{seed}.{fmt}"

    def _write(self, audio: np.ndarray, stem: str, seed: int, fmt: str) -> tuple[str, str]:
        """Write a result as WAV for the player, plus FLAC for the download when asked; returns (play, download)."""
        from .audio import write_audio

        wav = write_audio(self._name(stem, seed, "wav"), audio, self.pipe.sample_rate, "wav")
        if fmt == "flac":
            return str(wav), str(write_audio(wav.with_suffix(".flac"), audio, self.pipe.sample_rate, "flac"))
        return str(wav), str(wav)

    def _common(self, steps, guidance, seed, sampler, negative) -> dict:
        from .samplers import SAMPLERS

        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        return {"steps": _number(steps, "steps", low=1, high=MAX_STEPS, integer=True),
                "guidance": _number(guidance, "guidance", low=0, high=100),
                "sampler": sampler, "negative": (negative or "").strip() or None, "seed": _seed(seed)}

    def _settings_text(self, settings: dict, command: str, scores=()) -> tuple[str, str]:
        shown = dict(settings, model=self.model, sample_rate=self.pipe.sample_rate)
        if scores:  # a result, not a setting: the kept waveforms' CLAP scores
            shown["clap_scores"] = [round(float(x), 4) for x in scores]
        if self.device != "cpu" or self.dtype != "float32":
            shown.update(device=self.device, dtype=self.dtype)
        out = "out.wav" if command == "generate" else f"{command}.wav"
        cmd = command_line(command, dict(settings, device=self.device, dtype=self.dtype, clap=self.clap,
                                                threads=self.threads),
                           self.model, out)
        return json.dumps(shown, indent=2, ensure_ascii=False), cmd

    def generate(self, prompt, negative, seconds, steps, guidance, seed, sampler, n, fmt, request=None,
                 progress=None, *, window="auto", overlap=OVERLAP_S, loop=False, candidates=1):
        """Text to audio. Returns the player values (MAX_WAVEFORMS), downloads, pictures, settings, command.

        window ("auto", "none" or seconds), overlap (seconds), loop: the long-form options
        (:mod:`audioldm_core.longform`); candidates: best-of-N by CLAP score (needs the tower)."""
        import torch

        from .longform import check_args
        from .plot import stack_pictures, write_spectrogram

        gr = _gradio()
        settings = {"prompt": _prompt(prompt), "seconds": _seconds(seconds),
                    "n": _number(n, "number of waveforms", low=1, high=MAX_WAVEFORMS, integer=True),
                    "window": _window(window), "overlap": _number(overlap, "overlap", low=0, high=MAX_SECONDS),
                    "loop": bool(loop),
                    "candidates": _number(candidates if candidates not in (None, "") else 1, "candidates", low=1,
                                          high=MAX_CANDIDATES, integer=True),
                    **self._common(steps, guidance, seed, sampler, negative)}
        if settings["candidates"] != 1 and "candidates" not in self.caps:
            from .rerank import NO_TOWER

            raise InputError(NO_TOWER)
        check_args(settings["seconds"], settings["window"], settings["overlap"], settings["loop"])

        scores = []

        def work(session):
            gen = torch.Generator().manual_seed(settings["seed"])
            extra = {"num_candidates": settings["candidates"]} if settings["candidates"] != 1 else {}
            out = self.pipe(settings["prompt"], audio_length_in_s=settings["seconds"],
                            num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                            negative_prompt=settings["negative"], num_waveforms_per_prompt=settings["n"],
                            generator=gen, sampler=settings["sampler"], progress=False,
                            callback=self._callback(session, settings["steps"], progress),
                            window_s=settings["window"], overlap_s=settings["overlap"], loop=settings["loop"],
                            **extra)
            scores.extend(getattr(out, "scores", None) or [])
            return out.audios

        audios = self._run(request, work)
        players, downloads, pictures = [], [], []
        for k, audio in enumerate(audios):
            stem = "audioldm" + (f"-{k}" if len(audios) > 1 else "")
            play, download = self._write(audio, stem, settings["seed"], fmt)
            players.append(play)
            downloads.append(download)
            png = write_spectrogram(Path(play).with_suffix(".png"), audio, prompt=settings["prompt"],
                                    seed=settings["seed"],
                                    title=None if len(audios) == 1 else
                                    f"{settings['prompt']!r}, seed {settings['seed']}, waveform {k + 1}/{len(audios)}")
            pictures.append(str(png))
        picture = pictures[0] if len(pictures) == 1 else \
            str(stack_pictures(Path(players[0]).with_name("audioldm-all.png"), pictures))
        text, cmd = self._settings_text(settings, "generate", scores)
        slots = [gr.Audio(value=players[k] if k < len(players) else None, visible=k < len(players))
                 for k in range(MAX_WAVEFORMS)]
        return (*slots, downloads, picture, text, cmd)

    def edit(self, mode, path, prompt, negative, steps, guidance, seed, sampler, fmt, extra: dict,
             request=None, progress=None):
        """One edit (``mode`` in transfer, inpaint, superres); ``extra`` holds its own settings."""
        import torch

        from .plot import write_comparison

        waveform, name = _input_audio(path)
        settings = {"input": name, "prompt": _prompt(prompt, required=mode != "superres"), **extra,
                    **self._common(steps, guidance, seed, sampler, negative)}
        duration = len(waveform) / 16000
        if mode == "inpaint":
            if not 0 <= settings["start"] < settings["end"]:
                raise InputError(f"need 0 <= start < end, got start {settings['start']:g} s, end {settings['end']:g} s")
            if settings["start"] >= duration:
                raise InputError(f"start {settings['start']:g} s is past the end of the input ({duration:.2f} s)")
        cutoff = None
        if mode == "superres":
            from .edit import detect_cutoff

            cutoff = settings["cutoff"] if settings["cutoff"] is not None else detect_cutoff(waveform)

        total = self._edit_total(settings["sampler"], settings["steps"], settings.get("strength", 1.0))

        def work(session):
            kw = dict(num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                      negative_prompt=settings["negative"], sampler=settings["sampler"], progress=False,
                      generator=torch.Generator().manual_seed(settings["seed"]),
                      callback=self._callback(session, total, progress))
            if mode == "transfer":
                return self.pipe.transfer(waveform, settings["prompt"], settings["strength"], **kw).audios[0]
            if mode == "inpaint":
                return self.pipe.inpaint(waveform, settings["prompt"], settings["start"], settings["end"], **kw).audios[0]
            return self.pipe.super_resolve(waveform, settings["prompt"], settings["cutoff"], **kw).audios[0]

        audio = self._run(request, work)
        play, download = self._write(audio, mode, settings["seed"], fmt)
        png = write_comparison(Path(play).with_suffix(".png"), waveform, audio, prompt=settings["prompt"],
                               seed=settings["seed"], mode=mode,
                               region_s=(settings["start"], settings["end"]) if mode == "inpaint" else None,
                               cutoff_hz=cutoff)
        text, cmd = self._settings_text(settings, mode)
        return play, [download], str(png), text, cmd

    def variation(self, path, prompt, text_weight, seconds, steps, guidance, seed, sampler, fmt, request=None,
                  progress=None):
        """A variation of one clip from its CLAP audio embedding (``pipe.variation``), optionally mixed
        with a prompt at ``text_weight``. Returns player, downloads, picture, settings, command."""
        import torch

        from .plot import write_comparison

        if "variation" not in self.caps:
            from .rerank import NO_TOWER

            raise InputError(NO_TOWER)
        waveform, name = _input_audio(path)
        text = _prompt(prompt, required=False) or None
        settings = {"input": name, "prompt": text,
                    "text_weight": _number(text_weight, "text weight", low=0, high=1),
                    "seconds": _seconds(seconds), **self._common(steps, guidance, seed, sampler, None)}
        del settings["negative"]  # a variation's unconditional side is the empty prompt

        def work(session):
            return self.pipe.variation(waveform, prompt=text, text_weight=settings["text_weight"],
                                       audio_length_in_s=settings["seconds"], num_inference_steps=settings["steps"],
                                       guidance_scale=settings["guidance"], sampler=settings["sampler"],
                                       generator=torch.Generator().manual_seed(settings["seed"]), progress=False,
                                       callback=self._callback(session, settings["steps"], progress)).audios[0]

        audio = self._run(request, work)
        play, download = self._write(audio, "variation", settings["seed"], fmt)
        png = write_comparison(Path(play).with_suffix(".png"), waveform, audio, prompt=text, seed=settings["seed"],
                               mode="variation")
        info, cmd = self._settings_text(settings, "variation")
        return play, [download], str(png), info, cmd

    def _edit_total(self, sampler: str, steps: int, strength: float) -> int:
        """Model evaluations an edit runs (its callback counts these)."""
        from .samplers import start_for_strength, timesteps_for

        n = len(timesteps_for(sampler, self.pipe.config.schedule, steps))
        return max(n - start_for_strength(sampler, self.pipe.config.schedule, steps, strength), 1)

    def region_preview(self, path, start, end):
        """The input's spectrogram with the inpainting range shaded (None while no input)."""
        from .plot import write_region_preview

        if not path:
            return None
        try:
            waveform, _ = _input_audio(path)
            a = _number(start, "start", low=0, high=MAX_SECONDS)
            b = _number(end, "end", low=0, high=MAX_SECONDS)
            return str(write_region_preview(self._name("preview", 0, "png"), waveform, a, b))
        except AudioLDMError as e:
            raise _gradio().Error(str(e), print_exception=False) from None

    # --- the page ------------------------------------------------------------------------------------

    def build(self):
        """The ``gr.Blocks`` page: one tab per entry of :data:`TABS` whose capability the pipeline has."""
        gr = _gradio()
        tiny = " (model 'tiny': random weights, the audio is noise)" if self.model == "tiny" else ""
        with gr.Blocks(title="audioldm-core", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
            gr.Markdown(f"## audioldm-core\nModel: `{self.model}`{tiny}; 16 kHz mono. Requests run "
                        f"{self.concurrency} at a time; the rest wait in order.")
            with gr.Tabs():
                for tab in TABS:
                    if tab.requires in self.caps:
                        with gr.Tab(tab.title, id=tab.requires):
                            getattr(self, tab.build)(gr)
        return page

    def _controls(self, gr, key: str, *, prompt_label: str = "Prompt", negative: bool = True) -> dict:
        from .samplers import SAMPLERS

        c = {"prompt": gr.Textbox(label=prompt_label, lines=2, elem_id=f"{key}-prompt")}
        if negative:
            c["negative"] = gr.Textbox(label="Negative prompt", elem_id=f"{key}-negative")
        with gr.Row():
            c["steps"] = gr.Number(value=10, label="Steps", precision=0, elem_id=f"{key}-steps")
            c["guidance"] = gr.Number(value=2.5, label="Guidance", elem_id=f"{key}-guidance")
            c["seed"] = gr.Number(value=-1, label="Seed (-1: random)", precision=0, elem_id=f"{key}-seed")
            c["sampler"] = gr.Dropdown(choices=list(SAMPLERS), value="ddim", label="Sampler", elem_id=f"{key}-sampler")
            c["fmt"] = gr.Radio(choices=["wav", "flac"], value="wav", label="Download format", elem_id=f"{key}-format")
        return c

    def _outputs(self, gr, key: str, players: int = 1) -> list:
        with gr.Row():
            run = gr.Button("Generate", variant="primary", elem_id=f"{key}-run")
            stop = gr.Button("Stop", elem_id=f"{key}-stop")
        audio = [gr.Audio(label="Result" if players == 1 else f"Waveform {k + 1}", type="filepath",
                          interactive=False, visible=k == 0, elem_id=f"{key}-audio-{k}") for k in range(players)]
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id=f"{key}-files")
        pics = gr.Image(label="Log-mel spectrogram", type="filepath", format="png", interactive=False,
                        elem_id=f"{key}-spectrogram")
        settings = gr.Code(label="Settings (with the seed used)", language="json", interactive=False,
                           elem_id=f"{key}-settings")
        cmd = gr.Textbox(label="The same from the command line", lines=2, max_lines=4, interactive=False,
                         buttons=["copy"], elem_id=f"{key}-command")
        return [run, stop, *audio, files, pics, settings, cmd]

    def _wire(self, gr, run, stop, fn, inputs, outputs):
        event = run.click(fn, inputs=inputs, outputs=outputs, concurrency_id="model",
                          concurrency_limit=self.concurrency)
        def on_stop(request: gr.Request):
            self.stop(request)

        stop.click(on_stop, inputs=None, outputs=None, cancels=[event], queue=False)

    def _text_tab(self, gr):
        c = self._controls(gr, "text")
        with gr.Row():
            seconds = gr.Number(value=5.0, label="Seconds", elem_id="text-seconds")
            n = gr.Number(value=1, label=f"Number of waveforms (1-{MAX_WAVEFORMS})", precision=0, elem_id="text-n")
            candidates = gr.Number(value=1, label=f"Candidates per waveform, best kept by CLAP score "
                                                  f"(1-{MAX_CANDIDATES})", precision=0, elem_id="text-candidates",
                                   visible="candidates" in self.caps)
        with gr.Row():  # long-form: windows merged at every step (MultiDiffusion); a loop wraps around
            window = gr.Textbox(value="auto", label="Window: auto (10.24 s windows beyond 30.72 s), none, "
                                                    "or seconds (a multiple of 0.04)", elem_id="text-window")
            overlap = gr.Number(value=OVERLAP_S, label="Window overlap (s, a multiple of 0.04)", elem_id="text-overlap")
            loop = gr.Checkbox(value=False, label="Loop seamlessly (at least one window long)", elem_id="text-loop")
        run, stop, *rest = self._outputs(gr, "text", players=MAX_WAVEFORMS)

        def fn(prompt, negative, seconds, steps, guidance, seed, sampler, n, fmt, window, overlap, loop, candidates,
               request: gr.Request, progress=gr.Progress()):
            return self.safe(lambda: self.generate(prompt, negative, seconds, steps, guidance, seed, sampler, n, fmt,
                                                   request, progress, window=window, overlap=overlap, loop=loop,
                                                   candidates=candidates))

        self._wire(gr, run, stop, fn, [c["prompt"], c["negative"], seconds, c["steps"], c["guidance"], c["seed"],
                                       c["sampler"], n, c["fmt"], window, overlap, loop, candidates], rest)

    def _input(self, gr, key: str):
        return gr.Audio(label="Input audio (upload or record)", sources=["upload", "microphone"], type="filepath",
                        elem_id=f"{key}-input")

    def _transfer_tab(self, gr):
        src = self._input(gr, "transfer")
        c = self._controls(gr, "transfer")
        strength = gr.Slider(0, 1, value=0.5, step=0.05, label="Strength (0 keeps the input, 1 ignores it)",
                             elem_id="transfer-strength")
        run, stop, *rest = self._outputs(gr, "transfer")

        def fn(path, prompt, negative, steps, guidance, seed, sampler, fmt, strength, request: gr.Request,
               progress=gr.Progress()):
            return self.safe(lambda: self.edit("transfer", path, prompt, negative, steps, guidance, seed, sampler,
                                               fmt, {"strength": _number(strength, "strength", low=0, high=1)},
                                               request, progress))

        self._wire(gr, run, stop, fn, [src, c["prompt"], c["negative"], c["steps"], c["guidance"], c["seed"],
                                       c["sampler"], c["fmt"], strength], rest)

    def _inpaint_tab(self, gr):
        with gr.Row():
            src = self._input(gr, "inpaint")
            preview = gr.Image(label="Range to regenerate", type="filepath", format="png", interactive=False,
                               elem_id="inpaint-preview")
        with gr.Row():
            start = gr.Number(value=1.0, label="Start (s)", elem_id="inpaint-start")
            end = gr.Number(value=2.0, label="End (s)", elem_id="inpaint-end")
        c = self._controls(gr, "inpaint", prompt_label="Prompt for the regenerated range")
        run, stop, *rest = self._outputs(gr, "inpaint")
        for trigger in (src.change, start.change, end.change):
            trigger(self.region_preview, inputs=[src, start, end], outputs=preview, queue=False)

        def fn(path, prompt, negative, steps, guidance, seed, sampler, fmt, a, b, request: gr.Request,
               progress=gr.Progress()):
            def call():
                extra = {"start": _number(a, "start", low=0, high=MAX_SECONDS),
                         "end": _number(b, "end", low=0, high=MAX_SECONDS)}
                return self.edit("inpaint", path, prompt, negative, steps, guidance, seed, sampler, fmt, extra,
                                 request, progress)

            return self.safe(call)

        self._wire(gr, run, stop, fn, [src, c["prompt"], c["negative"], c["steps"], c["guidance"], c["seed"],
                                       c["sampler"], c["fmt"], start, end], rest)

    def _superres_tab(self, gr):
        src = self._input(gr, "superres")
        cutoff = gr.Number(value=0, label="Cutoff in Hz (0: detect from the input)", elem_id="superres-cutoff")
        c = self._controls(gr, "superres", prompt_label="Prompt (optional)")
        run, stop, *rest = self._outputs(gr, "superres")

        def fn(path, prompt, negative, steps, guidance, seed, sampler, fmt, hz, request: gr.Request,
               progress=gr.Progress()):
            def call():
                v = _number(hz if hz not in (None, "") else 0, "cutoff", low=0, high=7999)
                return self.edit("superres", path, prompt, negative, steps, guidance, seed, sampler, fmt,
                                 {"cutoff": v or None}, request, progress)

            return self.safe(call)

        self._wire(gr, run, stop, fn, [src, c["prompt"], c["negative"], c["steps"], c["guidance"], c["seed"],
                                       c["sampler"], c["fmt"], cutoff], rest)

    def _variation_tab(self, gr):
        src = self._input(gr, "variation")
        c = self._controls(gr, "variation", prompt_label="Prompt mixed in (optional)", negative=False)
        with gr.Row():
            weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Text weight (used with a prompt)",
                               elem_id="variation-text-weight")
            seconds = gr.Number(value=5.12, label="Seconds", elem_id="variation-seconds")
        run, stop, *rest = self._outputs(gr, "variation")

        def fn(path, prompt, text_weight, seconds, steps, guidance, seed, sampler, fmt, request: gr.Request,
               progress=gr.Progress()):
            return self.safe(self.variation, path, prompt, text_weight, seconds, steps, guidance, seed, sampler, fmt,
                             request, progress)

        self._wire(gr, run, stop, fn, [src, c["prompt"], weight, seconds, c["steps"], c["guidance"], c["seed"],
                                       c["sampler"], c["fmt"]], rest)


def serve(model: str, host: str = "127.0.0.1", port: int = 7860, *, concurrency: int = 1, device: str = "cpu",
          dtype: str = "float32", threads: Optional[int] = None, clap: Optional[str] = None) -> int:
    """Load ``model`` once and serve the page at http://host:port until interrupted; returns 0.
    clap: a CLAP audio file to attach (as ``from_pretrained(clap=...)``: candidates, not variation)."""
    import torch

    from .errors import SourceNotFoundError
    from .pipeline import AudioLDM

    _gradio()  # a missing extra fails before the model loads
    if not 0 < int(port) < 65536:
        raise InputError(f"port must be in 1..65535, got {port}")
    if threads:
        torch.set_num_threads(threads)
    if host not in LOCAL_HOSTS:
        print(f"audioldm serve: WARNING: binding to {host}: anyone who can reach this address and port can use "
              "the model, upload audio files and download results; there is no login", file=sys.stderr)
    try:
        pipe = AudioLDM.from_pretrained(model, device=device, dtype=getattr(torch, dtype), clap=clap)
    except SourceNotFoundError as e:
        raise SourceNotFoundError(f"{e}; for an offline demo use --model tiny (random weights)") from None
    app = WebApp(pipe, model, concurrency=concurrency, device=device, dtype=dtype, clap=clap, threads=threads)
    page = app.build()
    page.queue(default_concurrency_limit=concurrency)
    print(f"audioldm serve: model {model} loaded; open http://{'[' + host + ']' if ':' in host else host}:{port}",
          file=sys.stderr, flush=True)
    try:
        page.launch(server_name=host, server_port=int(port), share=False, inbrowser=False, show_error=True,
                    ssr_mode=False, mcp_server=False, pwa=False, quiet=True, allowed_paths=[str(app.out_dir)])
    finally:
        shutil.rmtree(app.out_dir, ignore_errors=True)
    return 0
