"""Command line: ``python -m app.sft train CONFIG.yaml`` trains once, without the server."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from .config import SFTConfig
from .errors import SFTError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.sft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one config and print the result as JSON")
    train.add_argument("config", type=Path, help="YAML file of SFTConfig fields")
    train.add_argument("--output-dir", help="override the config's output_dir")
    args = parser.parse_args(argv)

    try:
        config = SFTConfig.from_yaml(args.config)
    except (OSError, SFTError, ValidationError) as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    output_dir = args.output_dir or config.output_dir or str(Path("outputs") / args.config.stem)
    config = SFTConfig.model_validate({**config.model_dump(exclude_unset=True), "output_dir": output_dir})

    from .trainer import SFTTrainer

    stop = threading.Event()
    # First Ctrl-C stops at the next step and saves; a second one aborts.
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), signal.signal(signal.SIGINT, signal.SIG_DFL)))
    try:
        result = SFTTrainer(config, stop_event=stop, disable_tqdm=False).train()
    except SFTError as exc:
        print(f"error ({exc.category}): {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
