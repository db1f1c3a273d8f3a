"""Regenerate ``audioldm_core/configs/<name>.json`` from the shipped cvssp config files.

Run ``python -m convert.make_builtin_configs`` after changing ``convert/cvssp_configs/``;
``tests/test_config.py`` fails while the two disagree.
"""

import json
from pathlib import Path

from convert.cvssp import BUILTIN_SOURCES, read_folder_config, shipped_config_dir

OUT = Path(__file__).resolve().parent.parent / "audioldm_core" / "configs"


def main() -> None:
    """Write one JSON file per built-in name."""
    for name in BUILTIN_SOURCES:
        cfg = read_folder_config(shipped_config_dir(name), name=name)
        (OUT / f"{name}.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        print(f"wrote {OUT / f'{name}.json'}")


if __name__ == "__main__":
    main()
