"""Where each public dataset is published and what a missing root should say: a module of its
own, without torch or Lightning, because the launcher checks dataset folders before those load."""

from __future__ import annotations

from pathlib import Path

# Where each dataset is published (none can be downloaded by this project: they ship as RAR
# archives from their authors' pages). Named in the error when a root is missing.
SOURCES = {
    "ucf50": "UCF50.rar from https://www.crcv.ucf.edu/data/UCF50.php "
    "(unpack to <root>/<Class>/*.avi)",
    "ucf101": "UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from "
    "https://www.crcv.ucf.edu/data/UCF101.php (unpack to <root>/<Class>/*.avi, splits in "
    "<root>/ucfTrainTestlist)",
    "hmdb51": "hmdb51_org.rar and test_train_splits.rar from "
    "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/ (unpack each "
    "class "
    "archive to <root>/<class>/*.avi, splits to <root>/testTrainMulti_7030_splits)",
    "kth": "the six *_avi.zip archives from https://www.csc.kth.se/cvap/actions/ "
    "(unpack to <root>/<action>/*.avi)",
}


def missing_root(key: str, path: object, dataset: str | None) -> str:
    """The one-line error for a dataset root that is not there (or not set): what to fetch and
    where."""
    where = SOURCES.get((dataset or "").lower().replace("-", ""))
    layout = f"get {where}" if where else "expected <root>/<class>/<clip> (one folder per class)"
    if not path:
        return f"{key} is not set: {key}=/path/to/it; {layout}"
    return f"{key}: {path} does not exist or is not a folder; {layout}"


def missing_roots(wanted: list[tuple[str, object, str | None]]) -> str | None:
    """Every folder of ``wanted`` (override key, path, dataset name) that is not there, in one
    message (None when all are): a run that needs four datasets lists all four at once."""
    missing = [
        missing_root(key, path, name)
        for key, path, name in wanted
        if not path or not Path(str(path)).expanduser().is_dir()
    ]
    if len(missing) < 2:
        return missing[0] if missing else None
    return f"{len(missing)} dataset folders are missing: " + " | ".join(missing)


def configured_roots(data) -> list[tuple[str, object, str | None]]:  # noqa: ANN001 - a data config (DictConfig or dict)
    """(override key, path, dataset name) of each folder a folder or cross-dataset data config
    reads; nothing for data that is generated (the built-in corpus) or downloaded."""
    target = str(data.get("_target_") or "")
    out: list[tuple[str, object, str | None]] = []
    if target.endswith("CrossDataModule"):
        if data.get("sources"):  # several training sets (experiment=paper_real)
            out += [(f"data.sources.{n}", path, n) for n, path in data.get("sources").items()]
        else:
            source = data.get("source") or {}
            out.append(("data.source.root", source.get("root"), source.get("name")))
        out += [
            (f"data.targets.{name}", path, name)
            for name, path in (data.get("targets") or {}).items()
            if path
        ]
    elif target.endswith("FolderDataModule"):
        if data.get("root"):
            out.append(("data.root", data.get("root"), data.get("preset")))
        out += [
            (f"data.roots.{name}", path, data.get("preset") or name)
            for name, path in (data.get("roots") or {}).items()
        ]
    return out
