"""Finding a checkpoint directory: a local path, a hub id in the local Hugging Face cache, or the
embedded default model. Nothing is downloaded.

Hub ids such as `facebook/wav2vec2-conformer-rel-pos-large` are looked up in the local cache only
(`models--org--name/snapshots/<revision>/`).
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "config.json"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def resolve_hub_snapshot(repo_id: str, revision: str = "main", cache_dir: Path | None = None) -> Path:
    """Snapshot directory of `repo_id` in the local cache; `revision` is a ref name or a commit hash."""
    repo_dir = (cache_dir or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local directory nor in the Hugging Face cache ({repo_dir} not found); "
            "download it first, e.g. `huggingface-cli download " + repo_id + "`"
        )
    snapshots = repo_dir / "snapshots"
    ref_file = repo_dir / "refs" / revision
    if ref_file.is_file():
        commit = ref_file.read_text().strip()
        if (snapshots / commit).is_dir():
            return snapshots / commit
        raise FileNotFoundError(f"{ref_file} points to {commit}, which is missing under {snapshots}")
    if (snapshots / revision).is_dir():
        return snapshots / revision
    available = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    if revision == "main" and len(available) == 1:
        return available[0]
    raise FileNotFoundError(
        f"revision {revision!r} of {repo_id!r} not found in {repo_dir}; snapshots: {[p.name for p in available]}"
    )


def resolve_model_dir(dir_or_id: str | Path, revision: str = "main") -> Path:
    """A directory containing `config.json`, from a local path or a cached hub id."""
    path = Path(dir_or_id).expanduser()
    if not path.is_dir():
        if isinstance(dir_or_id, Path) or not _looks_like_hub_id(str(dir_or_id)):
            raise FileNotFoundError(f"model directory {path} does not exist")
        path = resolve_hub_snapshot(str(dir_or_id), revision)
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{path} contains no {CONFIG_NAME}: not a model checkpoint (is it empty?)")
    return path


def default_model_dir() -> Path:
    """The model shipped with the package (filled by the training pipeline)."""
    return Path(__file__).resolve().parent / "pretrained" / "en-small"
