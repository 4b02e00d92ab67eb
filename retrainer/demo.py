"""`make demo`: the main job, locally, with no Azure account.

Starts Azurite, generates a synthetic P&ID image set, and loads it into the datastore with the
data loader (the same label conversion the blob trigger runs). Later stages of the loop (pipeline,
training, promotion) join here as they land.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from retrainer.azurite import running_azurite
from retrainer.synthetic import write_dataset_zip

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60, help="sheets in the generated set")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".demo")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    zip_path = args.workdir / "sets" / f"synthetic_{args.seed}_{args.images}.zip"
    started = time.perf_counter()
    print(f"[1/2] generating {args.images} synthetic sheets -> {zip_path.relative_to(PROJECT_ROOT)}")
    write_dataset_zip(zip_path, args.images, args.seed)
    with running_azurite(PROJECT_ROOT) as azurite:
        os.environ["STORAGE_ACCOUNT_CONNECTION_STRING"] = azurite.connection_string
        os.environ.setdefault("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
        print(f"[2/2] loading it into Azurite (blob port {azurite.blob_port}) with the data loader")
        from pipeline_steps import data_loader

        code = data_loader.main(
            ["--raw-blob-sas-url", str(zip_path), "--raw-input-path", str(args.workdir / "downloads")]
        )
    print(f"demo finished in {time.perf_counter() - started:.1f} s (data loader exit code {code})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
