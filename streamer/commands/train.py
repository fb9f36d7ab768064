"""``conformer-streamer train``: train (or resume) a Wav2Vec2-Conformer CTC model; ``--export DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "model" / "training" / "configs" / "en-small.toml",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (the same code runs on both)")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long"
    )
    parser.add_argument("--steps", type=int, default=None, help="stop after this many more steps")
    parser.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if a checkpoint exists"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="default: $HOME_DIR/runs/<config name>")
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        help="write the HF layout to DIR (from best.pt if present, else last.pt); no training",
    )
    parser.add_argument("--from", dest="from_ckpt", choices=["best", "last"], default="best")
    parser.add_argument(
        "--backend",
        choices=["ours", "transformers"],
        default="ours",
        help="model implementation (transformers: same state dict, for cross-checks)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import torch

    from model.training import corpus, trainer

    cfg = trainer.TrainConfig.from_toml(args.config)
    if args.threads:
        cfg.threads = args.threads
    home = corpus.home()
    run_dir = args.run_dir or home / "runs" / cfg.name
    if args.export:
        model = trainer.build_model(cfg, "ours")
        path = run_dir / f"{args.from_ckpt}.pt"
        if not path.exists():
            path = run_dir / "last.pt"
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        model.eval()
        out = trainer.export(model, args.export, cfg)
        step = ckpt.get("step") or ckpt.get("state", {}).get("step")
        print(f"exported {path} (step {step}) to {out}")
        return 0
    result = trainer.train(
        cfg,
        home,
        device=args.device,
        max_minutes=args.max_minutes,
        resume=not args.no_resume,
        progress=not args.no_progress,
        backend=args.backend,
        max_steps_now=args.steps,
        run_dir=run_dir,
    )
    print(f"stopped at step {result['state']['step']}; checkpoints in {result['run_dir']}")
    return 0
