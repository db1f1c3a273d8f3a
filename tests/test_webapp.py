"""The web app (`audioldm serve`) in a real browser: a server subprocess with the `tiny` model on a
free local port, driven by Debian's headless Chromium through Playwright.

Each tab: fill the form, run, fetch the audio from the page's download link and check it decodes to
the requested length at 16 kHz, the spectrogram is a PNG, and a screenshot of the tab is not blank
(saved under the test's tmp dir). Bad input shows one message and the page keeps working; two
requests submitted at once both complete, in order; Stop frees the model at the next step; the page
makes no request off this machine; the command line it shows reproduces its audio. The long-form
controls run a loop; a second server on a `tiny` file carrying a test-size CLAP audio tower shows
candidates (with CLAP scores) and the variation tab, whose command line reproduces its audio.

Without a browser: which tabs and controls a pipeline gets (with no tower, an external one, the
model's own), the command lines with the new flags parse with the CLI's parser, and the text and
variation handlers equal direct pipeline calls and refuse bad long-form settings.
"""

import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from audioldm_core.audio import SAMPLE_RATE, write_audio

CHROMIUM = os.environ.get("AUDIOLDM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent
RESULT_TIMEOUT = 120_000  # ms; a tiny-model request takes a few seconds


def _requirements():
    from conftest import require

    _requirements_ui()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require("browser", "playwright (the test extra) is missing")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        require("browser", f"Chromium is missing at {CHROMIUM} (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: str, folder: Path):
    """Run `audioldm serve --model MODEL` on a free loopback port; yields its base URL."""
    port = _free_port()
    log = folder / "serve.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(ROOT),
               AUDIOLDM_TEST_THREADS=os.environ.get("AUDIOLDM_TEST_THREADS", "1"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "audioldm_core.cli", "serve", "--model", model, "--port",
                                 str(port), "--threads", "1"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"audioldm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"audioldm serve did not answer within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The base URL of an `audioldm serve --model tiny` subprocess on a free loopback port."""
    _requirements()
    yield from _serve("tiny", tmp_path_factory.mktemp("serve"))


def tiny_with_tower(path: Path) -> Path:
    """Write `tiny` plus a test-size CLAP audio tower (the optional component ``clap_audio``) as one
    converted file, as audioldm-convert writes an original .ckpt with its tower."""
    import json
    from importlib import resources

    from audioldm_core.checkpoint import save_checkpoint
    from audioldm_core.clap_file import metadata_for
    from audioldm_core.tiny import build_tiny

    config, _, modules = build_tiny()
    tokenizer = json.loads(resources.files("audioldm_core.configs").joinpath("tiny-tokenizer.json").read_text())
    tower = _tower()
    tensors = {c: m.state_dict() for c, m in modules.items()} | {"clap_audio": tower.state_dict()}
    return save_checkpoint(path, tensors, config, tokenizer, {"source": "test: tiny with a CLAP audio tower"},
                           extra_metadata=metadata_for(tower.cfg))


@pytest.fixture(scope="module")
def tower_server(tmp_path_factory):
    """The base URL of `audioldm serve --model FILE`, FILE being `tiny` with a CLAP audio tower."""
    _requirements()
    folder = tmp_path_factory.mktemp("serve-tower")
    yield from _serve(str(tiny_with_tower(folder / "tiny-clap.safetensors")), folder)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """One browser tab on the app (its own Gradio session), recording requests that leave 127.0.0.1."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
        self.page = self.context.new_page()
        self.external: list[str] = []
        self.page.route("**/*", self._route)
        self.page.goto(url)
        self.page.wait_for_selector("#text-prompt textarea", timeout=60_000)

    def _route(self, route):
        u = route.request.url
        if u.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            self.external.append(u)
            route.abort()

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def fill(self, key: str, value) -> None:
        self.page.fill(f"#{key} textarea, #{key} input[type=number], #{key} input[type=text]", str(value))

    def upload(self, key: str, path: Path) -> None:
        clear = self.page.locator(f"#{key} button[aria-label=Clear]")
        if clear.count():  # a file is loaded: clear it to get the upload area back
            clear.first.click()
        self.page.set_input_files(f"#{key} input[type=file]", str(path))
        self.page.wait_for_selector(f"#{key} audio, #{key} [data-testid=waveform-controls], #{key} .waveform-container",
                                    state="attached", timeout=30_000)

    def run(self, key: str) -> None:
        self.page.click(f"#{key}-run")

    def wait_result(self, key: str, seed: int) -> None:
        """Wait until the settings box shows this request's seed."""
        self.page.wait_for_function(
            "([sel, seed]) => { const e = document.querySelector(sel); return e && e.innerText.includes(seed); }",
            arg=[f"#{key}-settings .cm-content", f'"seed": {seed}'], timeout=RESULT_TIMEOUT)

    def downloads(self, key: str) -> list[bytes]:
        links = self.page.locator(f"#{key}-files a[data-testid=download-link]")
        return [self.context.request.get(links.nth(k).get_attribute("href")).body() for k in range(links.count())]

    def pictures(self, key: str) -> list[bytes]:
        imgs = self.page.locator(f"#{key}-spectrogram img")
        srcs = {imgs.nth(k).get_attribute("src") for k in range(imgs.count())}
        return [self.context.request.get(s).body() for s in sorted(srcs)]

    def text(self, sel: str) -> str:
        """The text of a code box (the settings) or a text box (the command line)."""
        if sel.endswith("-command"):
            return self.page.locator(f"{sel} textarea").input_value()
        return self.page.locator(f"{sel} .cm-content").inner_text()

    def message(self, contains: str, timeout: float = 60_000) -> None:
        """Wait for a toast containing ``contains``, then close all toasts."""
        self.page.locator("[data-testid=toast-text]", has_text=contains).first.wait_for(timeout=timeout)
        for b in self.page.locator("[data-testid=toast-close]").all():
            if b.is_visible():
                b.click()

    def screenshot(self, path: Path) -> np.ndarray:
        self.page.screenshot(path=str(path))
        return _png(path.read_bytes())

    def close(self) -> None:
        assert not self.external, f"the page requested addresses off this machine: {self.external}"
        self.context.close()


def _png(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}"
    return mpimg.imread(io.BytesIO(data), format="png")


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def _check_audio(data: bytes, seconds: float) -> np.ndarray:
    audio, rate = _decode(data)
    assert rate == SAMPLE_RATE, rate
    assert audio.ndim == 1 and len(audio) == int(seconds * SAMPLE_RATE), (audio.shape, seconds)
    assert np.abs(audio).max() > 0
    return audio


def _not_blank(img: np.ndarray) -> None:
    rgb = img[..., :3]
    assert rgb.std() > 0.05 and len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The shown commands carry the server's ``--threads 1``; running them here must not change the
    thread count of the tests that follow."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def page(browser, server):
    p = Page(browser, server)
    yield p
    p.close()


@pytest.fixture(scope="module")
def sine_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "sine.wav"
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    write_audio(path, (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    return path


def _form(p: Page, key: str, *, prompt="", steps=2, seed=7, sampler="ddim", fmt="wav"):
    if prompt:
        p.fill(f"{key}-prompt", prompt)
    p.fill(f"{key}-steps", steps)
    p.fill(f"{key}-seed", seed)
    if sampler != "ddim":
        p.page.click(f"#{key}-sampler input")
        p.page.get_by_role("option", name=sampler, exact=True).click()
    if fmt != "wav":
        p.page.locator(f"#{key}-format label", has_text=fmt).click()


def test_text_to_audio_tab(page, tmp_path):
    from audioldm_core.cli import main

    _form(page, "text", prompt="a dog barking", steps=3, seed=1234, fmt="flac")
    page.fill("text-seconds", 1.5)
    page.fill("text-n", 2)
    page.run("text")
    page.wait_result("text", 1234)
    files = page.downloads("text")
    assert len(files) == 2
    audios = [_check_audio(f, 1.5) for f in files]
    assert all(f[:4] == b"fLaC" for f in files)
    assert not np.array_equal(audios[0], audios[1])
    assert page.page.locator("#text-audio-1 audio, #text-audio-1 .waveform-container").count() >= 1
    (pic,) = page.pictures("text")
    img = _png(pic)
    _not_blank(img)
    assert img.shape[0] > img.shape[1] / 2  # two pictures one above the other
    _not_blank(page.screenshot(tmp_path / "text-to-audio.png"))
    # the command line shown reproduces the same samples
    cmd = shlex.split(page.text("#text-command"))
    assert cmd[:3] == ["audioldm", "generate", "a dog barking"] and "--seed" in cmd
    assert cmd[cmd.index("--threads") + 1] == "1"  # the server's thread count: it changes float sums
    out = tmp_path / "cli.flac"
    cmd[cmd.index("-o") + 1] = str(out)
    assert main(cmd[1:] + ["--no-progress"]) == 0
    for k, web in enumerate(audios):
        cli, _ = _decode((tmp_path / f"cli-{k}.flac").read_bytes())
        assert np.array_equal(cli, web), f"waveform {k}: max abs diff {np.abs(cli - web).max()}"
    assert (tmp_path / "cli-0.png").is_file()


def test_text_to_audio_loop(page, tmp_path):
    """Long-form controls through the browser: a loop of 1.28 s in windows of 0.64 s overlapping by
    0.16 s; the audio is exactly the requested length and the shown command reproduces it."""
    from audioldm_core.cli import main

    assert page.page.locator("#text-candidates").count() == 0  # `tiny` has no CLAP audio tower
    _form(page, "text", prompt="drum loop", steps=2, seed=4321)
    page.fill("text-seconds", 1.28)
    page.fill("text-window", 0.64)
    page.fill("text-overlap", 0.16)
    page.page.check("#text-loop input[type=checkbox]")
    page.run("text")
    page.wait_result("text", 4321)
    (data,) = page.downloads("text")
    web = _check_audio(data, 1.28)
    assert '"loop": true' in page.text("#text-settings")
    cmd = shlex.split(page.text("#text-command"))
    assert cmd[cmd.index("--window") + 1] == "0.64" and cmd[cmd.index("--overlap") + 1] == "0.16" and "--loop" in cmd
    out = tmp_path / "loop.wav"
    cmd[cmd.index("-o") + 1] = str(out)
    assert main(cmd[1:] + ["--no-progress"]) == 0
    cli, _ = _decode(out.read_bytes())
    assert np.array_equal(cli, web), f"max abs diff {np.abs(cli - web).max()}"
    page.page.uncheck("#text-loop input[type=checkbox]")


@pytest.mark.parametrize("key,tab", [("transfer", "Style transfer"), ("inpaint", "Inpainting"),
                                     ("superres", "Super-resolution")])
def test_edit_tabs(page, tmp_path, sine_wav, key, tab):
    page.tab(tab)
    page.upload(f"{key}-input", sine_wav)
    if key == "transfer":
        page.page.fill("#transfer-strength input[type=number]", "0.6")
    if key == "inpaint":
        page.fill("inpaint-start", 0.5)
        page.fill("inpaint-end", 1.25)
        page.page.wait_for_selector("#inpaint-preview img", timeout=30_000)
        src = page.page.locator("#inpaint-preview img").get_attribute("src")
        _not_blank(_png(page.context.request.get(src).body()))
    if key == "superres":
        page.fill("superres-cutoff", 3000)
    _form(page, key, prompt="" if key == "superres" else "a cat", seed=99, sampler="heun" if key == "inpaint" else "ddim")
    page.run(key)
    page.wait_result(key, 99)
    (data,) = page.downloads(key)
    _check_audio(data, 2.0)
    (pic,) = page.pictures(key)
    img = _png(pic)
    _not_blank(img)
    assert img.shape[1] > 2 * img.shape[0]  # input and output side by side
    cmd = page.text(f"#{key}-command")
    assert cmd.startswith(f"audioldm {key} sine.wav") and "--seed 99" in cmd
    _not_blank(page.screenshot(tmp_path / f"{key}.png"))


def test_bad_input_shows_a_message_and_the_page_keeps_working(page, tmp_path):
    _form(page, "text", steps=2, seed=5)
    page.fill("text-seconds", 1)
    page.run("text")  # empty prompt
    page.message("the prompt is empty")
    page.fill("text-prompt", "rain")
    page.fill("text-seconds", 0)
    page.run("text")
    page.message("seconds must be more than 0")
    page.fill("text-seconds", 1)
    page.run("text")
    page.wait_result("text", 5)
    _check_audio(page.downloads("text")[0], 1.0)

    page.tab("Style transfer")
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n" * 100)
    page.page.set_input_files("#transfer-input input[type=file]", str(text))
    page.message("Invalid file type")  # the browser refuses a .txt
    disguised = tmp_path / "notes.wav"
    shutil.copy(text, disguised)
    page.upload("transfer-input", disguised)
    _form(page, "transfer", prompt="a cat", seed=6)
    page.run("transfer")
    page.message("cannot read audio file notes.wav")  # the server refuses text named .wav
    wav = tmp_path / "ok.wav"
    write_audio(wav, (0.3 * np.sin(np.arange(SAMPLE_RATE) / 5)).astype(np.float32))
    page.upload("transfer-input", wav)
    page.run("transfer")
    page.wait_result("transfer", 6)
    _check_audio(page.downloads("transfer")[0], 1.0)


def test_two_requests_at_once_complete_in_order(browser, server):
    a, b = Page(browser, server), Page(browser, server)
    try:
        for p, seconds, seed, prompt in ((a, 1.0, 11, "first"), (b, 2.0, 22, "second")):
            _form(p, "text", prompt=prompt, steps=6, seed=seed)
            p.fill("text-seconds", seconds)
        a.run("text")
        b.run("text")
        done = {}
        deadline = time.monotonic() + RESULT_TIMEOUT / 1000
        while len(done) < 2 and time.monotonic() < deadline:
            for name, p, seed in (("a", a, 11), ("b", b, 22)):
                if name not in done and f'"seed": {seed}' in p.page.locator("#text-settings").inner_text():
                    done[name] = time.monotonic()
            time.sleep(0.05)
        assert set(done) == {"a", "b"}, f"finished: {sorted(done)}"
        assert done["a"] <= done["b"], "the second request finished before the first"
        _check_audio(a.downloads("text")[0], 1.0)
        _check_audio(b.downloads("text")[0], 2.0)
        assert '"prompt": "second"' in b.text("#text-settings")
    finally:
        a.close()
        b.close()


def test_stop_frees_the_model_at_the_next_step(page):
    # 500 steps of 10 s take minutes with the tiny model on one thread; after Stop, a short request
    # must get the model within seconds
    _form(page, "text", prompt="long", steps=500, seed=3)
    page.fill("text-seconds", 10)
    page.run("text")
    page.page.wait_for_function(
        "() => { const e = document.querySelector('#text-audio-0 [data-testid=status-tracker]');"
        " return e && /[1-9][0-9]*\\/500 steps/.test(e.innerText); }", timeout=60_000)
    page.page.click("#text-stop")
    t0 = time.monotonic()
    _form(page, "text", prompt="short", steps=2, seed=4)
    page.fill("text-seconds", 1)
    page.run("text")
    page.wait_result("text", 4)
    waited = time.monotonic() - t0
    assert waited < 30, f"the request after Stop took {waited:.0f} s: the stopped generation kept the model"
    _check_audio(page.downloads("text")[0], 1.0)
    messages = page.page.locator("[data-testid=toast-text]").all_inner_texts()
    assert set(messages) <= {"stopped"}, messages  # "stopped" shows when it arrives before the cancel


def test_variation_tab_and_candidates_with_a_tower(browser, tower_server, sine_wav, tmp_path):
    """A model file carrying the CLAP audio tower: the text tab offers candidates (the settings show
    the CLAP scores) and the variation tab runs; its shown command reproduces its audio."""
    from audioldm_core.cli import main

    page = Page(browser, tower_server)
    try:
        _form(page, "text", prompt="a bell", steps=2, seed=77)
        page.fill("text-seconds", 0.64)
        page.fill("text-candidates", 2)
        page.run("text")
        page.wait_result("text", 77)
        _check_audio(page.downloads("text")[0], 0.64)
        assert '"clap_scores"' in page.text("#text-settings") and "--candidates 2" in page.text("#text-command")

        page.tab("Variation")
        page.upload("variation-input", sine_wav)
        _form(page, "variation", prompt="birds", seed=88)
        page.fill("variation-seconds", 0.64)
        page.run("variation")
        page.wait_result("variation", 88)
        (data,) = page.downloads("variation")
        web = _check_audio(data, 0.64)
        (pic,) = page.pictures("variation")
        img = _png(pic)
        _not_blank(img)
        assert img.shape[1] > 2 * img.shape[0]  # input and output side by side
        _not_blank(page.screenshot(tmp_path / "variation.png"))
        cmd = shlex.split(page.text("#variation-command"))
        assert cmd[:3] == ["audioldm", "variation", "sine.wav"] and cmd[cmd.index("--prompt") + 1] == "birds"
        cmd[2] = str(sine_wav)
        out = tmp_path / "variation.wav"
        cmd[cmd.index("-o") + 1] = str(out)
        assert main(cmd[1:] + ["--no-progress"]) == 0
        cli, _ = _decode(out.read_bytes())
        assert np.array_equal(cli, web), f"max abs diff {np.abs(cli - web).max()}"
    finally:
        page.close()


# --- without a browser ---------------------------------------------------------------------------------

def test_command_line_quotes_and_names_every_setting():
    from audioldm_core.webapp import command_line

    common = {"steps": 3, "guidance": 2.5, "sampler": "heun", "seed": 9, "negative": "it's loud"}
    cmd = command_line("generate", dict(common, prompt="a 'dog'", seconds=1.5, n=2), "tiny", "out.wav")
    assert shlex.split(cmd) == ["audioldm", "generate", "a 'dog'", "--model", "tiny", "--seconds", "1.5", "-n", "2",
                                "--steps", "3", "--guidance", "2.5", "--sampler", "heun", "--seed", "9",
                                "--negative", "it's loud", "-o", "out.wav", "--spectrogram"]
    cmd = command_line("superres", dict(common, input="in put.wav", prompt="", cutoff=None, negative=None,
                                        dtype="float16"), "m.safetensors", "superres.wav")
    assert shlex.split(cmd)[:3] == ["audioldm", "superres", "in put.wav"] and "--prompt" not in cmd
    assert "--cutoff" not in cmd and "--dtype float16" in cmd
    from audioldm_core.cli import build_parser

    for c in (cmd, command_line("inpaint", dict(common, input="a.wav", prompt="p", start=0.5, end=1.0), "tiny",
                                "inpaint.wav")):
        build_parser().parse_args(shlex.split(c)[1:])  # the CLI accepts what the page shows


def test_capabilities_choose_the_tabs():
    from audioldm_core.webapp import TABS, capabilities

    class Text:
        def __call__(self):
            pass

    class All(Text):
        def transfer(self):
            pass

        inpaint = super_resolve = variation = transfer
        clap_audio_source = "checkpoint"  # the model's own CLAP audio tower is attached

    assert capabilities(Text()) == {"text"}
    assert capabilities(All()) == {"text", "transfer", "inpaint", "super_resolve", "candidates", "variation"}
    assert {t.requires for t in TABS} <= capabilities(All())


def test_page_validation_messages():
    from audioldm_core.errors import InputError
    from audioldm_core.webapp import _number, _prompt, _seconds, _seed

    with pytest.raises(InputError, match="prompt is empty"):
        _prompt("   ")
    with pytest.raises(InputError, match="more than 0"):
        _seconds(0)
    with pytest.raises(InputError, match=r"\[0, 60\]"):
        _seconds(61)
    with pytest.raises(InputError, match="whole number"):
        _number(2.5, "steps", low=1, high=10, integer=True)
    assert 0 <= _seed(-1) < 2**31 and _seed(7) == 7


# --- CLAP audio tower and long-form (no browser) -------------------------------------------------------

def _tower():
    """A test-size CLAP audio tower for `tiny` (as tests/test_rerank.py builds it)."""
    import torch

    from audioldm_core.htsat import HTSAT, ClapAudioConfig

    torch.manual_seed(11)
    m = HTSAT(ClapAudioConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), projection_dim=16)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


@pytest.fixture(scope="module")
def tower_app(tmp_path_factory):
    """A WebApp (no server) on `tiny` with a test-size tower attached as the model's own."""
    _requirements_ui()
    from audioldm_core.pipeline import AudioLDM
    from audioldm_core.webapp import WebApp

    pipe = AudioLDM.from_pretrained("tiny")
    tower = _tower()
    pipe.set_clap_audio(lambda: tower, "checkpoint")
    return WebApp(pipe, "tiny", out_dir=tmp_path_factory.mktemp("app"))


def _requirements_ui():
    from conftest import require

    for module in ("gradio", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            require("ui", f"{module} (the [ui] extra) is missing")


def test_capabilities_follow_the_clap_tower():
    from audioldm_core.pipeline import AudioLDM
    from audioldm_core.webapp import capabilities

    pipe = AudioLDM.from_pretrained("tiny")
    assert capabilities(pipe) == {"text", "transfer", "inpaint", "super_resolve"}

    def never():
        raise AssertionError("capabilities() loaded the tower")

    pipe.set_clap_audio(never, "external")  # another CLAP model: scores and re-ranks, no variations
    assert capabilities(pipe) == {"text", "transfer", "inpaint", "super_resolve", "candidates"}
    pipe.set_clap_audio(never, "checkpoint")
    assert capabilities(pipe) == {"text", "transfer", "inpaint", "super_resolve", "candidates", "variation"}
    pipe.set_clap_audio(None, None)
    assert "variation" not in capabilities(pipe) and "candidates" not in capabilities(pipe)


def test_page_shows_candidates_and_variation_only_with_a_tower(tower_app, tmp_path):
    from audioldm_core.pipeline import AudioLDM
    from audioldm_core.webapp import WebApp

    def components(app):
        page = app.build()
        return {b.elem_id: b for b in page.blocks.values() if getattr(b, "elem_id", None)}

    plain = components(WebApp(AudioLDM.from_pretrained("tiny"), "tiny", out_dir=tmp_path))
    assert "variation-run" not in plain and plain["text-candidates"].visible is False
    assert {"text-window", "text-overlap", "text-loop"} <= set(plain)
    full = components(tower_app)
    assert "variation-run" in full and full["text-candidates"].visible is True


def test_command_line_has_the_long_form_and_clap_flags():
    from audioldm_core.cli import build_parser
    from audioldm_core.webapp import command_line

    common = {"steps": 2, "guidance": 2.5, "sampler": "ddim", "seed": 9, "negative": None}
    cmd = command_line("generate", dict(common, prompt="drums", seconds=1.28, n=1, candidates=3, window=0.64,
                                        overlap=0.16, loop=True, clap="c.safetensors", threads=2), "tiny",
                       "out.wav")
    argv = shlex.split(cmd)
    assert argv[argv.index("--candidates") + 1] == "3" and argv[argv.index("--window") + 1] == "0.64"
    assert argv[argv.index("--overlap") + 1] == "0.16" and "--loop" in argv
    args = build_parser().parse_args(argv[1:])
    assert (args.candidates, args.window, args.overlap, args.loop, args.clap, args.threads) == \
        (3, 0.64, 0.16, True, "c.safetensors", 2)
    args = build_parser().parse_args(shlex.split(command_line(
        "generate", dict(common, prompt="x", seconds=40, n=1, window=None), "tiny", "out.wav"))[1:])
    assert args.window is None and args.overlap == 1.28 and not args.loop and args.candidates == 1
    cmd = command_line("variation", dict(common, input="my clip.wav", prompt="birds", text_weight=0.25, seconds=0.64),
                       "m.safetensors", "variation.wav")
    argv = shlex.split(cmd)
    assert argv[:3] == ["audioldm", "variation", "my clip.wav"] and "--spectrogram" not in argv
    args = build_parser().parse_args(argv[1:])
    assert (args.inputs, args.prompt, args.text_weight, args.seconds, args.seed, args.output) == \
        ([Path("my clip.wav")], "birds", 0.25, 0.64, 9, "variation.wav")
    argv = shlex.split(command_line("variation", dict(common, input="a.wav", prompt=None, text_weight=0.5, seconds=1),
                                    "m.safetensors", "variation.wav"))
    assert "--prompt" not in argv and "--text-weight" not in argv
    build_parser().parse_args(argv[1:])


def test_text_handler_candidates_and_loop(tower_app):
    """The text tab's handler passes candidates and the long-form options to the pipeline: its audio
    equals a direct call's, and the settings show the kept waveforms' CLAP scores."""
    import json

    import torch

    app = tower_app
    *players, files, picture, settings, cmd = app.generate("a dog", "", 0.64, 2, 2.5, 5, "ddim", 1, "wav",
                                                           candidates=2)
    web, _ = _decode(Path(files[0]).read_bytes())
    want = app.pipe("a dog", audio_length_in_s=0.64, num_inference_steps=2, num_candidates=2, progress=False,
                    generator=torch.Generator().manual_seed(5))
    assert np.abs(web - want.audios[0]).max() < 1e-4  # 16-bit WAV
    shown = json.loads(settings)
    assert shown["candidates"] == 2 and np.allclose(shown["clap_scores"], want.scores, atol=1e-4)
    assert "--candidates 2" in cmd
    *_, files, _, settings, cmd = app.generate("waves", "", 1.28, 2, 2.5, 6, "ddim", 1, "wav", window="0.64",
                                               overlap=0.16, loop=True)
    web = _check_audio(Path(files[0]).read_bytes(), 1.28)
    want = app.pipe("waves", audio_length_in_s=1.28, num_inference_steps=2, window_s=0.64, overlap_s=0.16, loop=True,
                    progress=False, generator=torch.Generator().manual_seed(6)).audios[0]
    assert np.abs(web - want).max() < 1e-4
    assert "--window 0.64 --overlap 0.16 --loop" in cmd


@pytest.mark.parametrize("kwargs, msg", [
    (dict(window="0.65"), "not a whole number of latent frames"),
    (dict(window="abc"), "window must be 'auto', 'none' or seconds"),
    (dict(window="none", loop=True), "loop=True needs windows"),
    (dict(window="auto", loop=True), "a loop must be at least one window long"),
    (dict(overlap=0.64, window="0.64"), "must be longer than overlap"),
    (dict(candidates=9), r"candidates must be in \[1, 8\]"),
])
def test_text_handler_refuses_bad_long_form_settings(tower_app, kwargs, msg):
    from audioldm_core.errors import InputError

    with pytest.raises(InputError, match=msg):
        tower_app.generate("a dog", "", 1.28, 2, 2.5, 5, "ddim", 1, "wav", **kwargs)


def test_variation_handler(tower_app, sine_wav, tmp_path):
    """The variation tab's handler: its audio equals ``pipe.variation``'s with the same settings; the
    picture is input and output side by side; without the model's own tower it refuses."""
    import torch

    from audioldm_core.audio import load_audio
    from audioldm_core.errors import InputError
    from audioldm_core.pipeline import AudioLDM
    from audioldm_core.webapp import WebApp

    app = tower_app
    play, files, picture, settings, cmd = app.variation(str(sine_wav), "birds", 0.25, 0.64, 2, 2.5, 8, "ddim", "flac")
    web = _check_audio(Path(files[0]).read_bytes(), 0.64)
    want = app.pipe.variation(load_audio(sine_wav)[0], prompt="birds", text_weight=0.25, audio_length_in_s=0.64,
                              num_inference_steps=2, progress=False,
                              generator=torch.Generator().manual_seed(8)).audios[0]
    assert np.abs(web - want).max() < 1e-4
    img = _png(Path(picture).read_bytes())
    _not_blank(img)
    assert img.shape[1] > 2 * img.shape[0]
    assert cmd.startswith("audioldm variation sine.wav --prompt birds --text-weight 0.25") and "--seed 8" in cmd
    with pytest.raises(InputError, match="no input audio"):
        app.variation(None, "", 0.5, 0.64, 2, 2.5, 8, "ddim", "wav")
    plain = WebApp(AudioLDM.from_pretrained("tiny"), "tiny", out_dir=tmp_path)
    with pytest.raises(InputError, match="no CLAP audio tower"):
        plain.variation(str(sine_wav), "", 0.5, 0.64, 2, 2.5, 8, "ddim", "wav")
    with pytest.raises(InputError, match="no CLAP audio tower"):
        plain.generate("a dog", "", 0.64, 2, 2.5, 5, "ddim", 1, "wav", candidates=2)
