"""The test fixtures' disk policy: one full-size checkpoint on disk at a time (see conftest)."""

from __future__ import annotations

import conftest


def test_one_full_size_checkpoint_on_disk_at_a_time(tmp_path, monkeypatch):
    def fake_write(folder, name, seed=0, weights="safetensors", fp16_variant=False):
        folder.mkdir(parents=True)
        (folder / "w").write_text(name)
        return folder

    def fake_convert(src, out):
        out.write_text(str(src))

    monkeypatch.setattr(conftest, "write_cvssp_folder", fake_write)
    monkeypatch.setattr("convert.core.convert_to_file", fake_convert)
    fx = conftest._Fixtures(tmp_path)
    tiny = fx.folder("tiny")
    a, a_bin, a_conv = fx.folder("s-full-v2"), fx.folder("s-full-v2", weights="bin"), fx.converted_file("s-full-v2")
    assert fx.folder("s-full-v2") == a and a.exists() and a_bin.exists() and a_conv.exists()
    b = fx.folder("l-full")  # evicts every s-full-v2 file, keeps tiny
    assert b.exists() and tiny.exists()
    assert not a.exists() and not a_bin.exists() and not a_conv.exists()
    assert fx.folder("s-full-v2") == a and a.exists() and not b.exists()  # rebuilt on demand
