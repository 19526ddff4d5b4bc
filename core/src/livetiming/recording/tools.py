"""Offline tools over recordings: analysis files and the recordings index.

``generate_analysis`` replays a recording through the same ``Analyser`` the
live service uses and writes the version 1 analysis file Timing71 clients
load (``{service, state, static, driver, lap, stint, car_messages,
messages, session}``). It reads the recording sequentially (one entry per
frame, intra-frames applied in place), so it is linear in the recording's
length.

``update_recordings_index`` maintains ``index.json`` for a recordings
directory (``timing71-wire.md`` §5.2). Abandoned journals (a recorder that
crashed and was never restarted) are finalised first; files that are not
recordings are skipped with one log line each; ``os.chdir`` is never used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from livetiming.recording.journal import JOURNAL_SUFFIX, is_locked
from livetiming.recording.reader import RecordingFile
from livetiming.recording.zipstore import RecordingException, finalise

Log = Callable[[str], None]


def write_json_atomically(path: str | os.PathLike, data: Any) -> None:
    """Write JSON so that a crash leaves the old file or the new one, never half of one.

    The text is made in one piece (``json.dumps`` runs the C encoder; ``json.dump`` to a file
    would take the pure-Python one, several times slower on a 24-hour analysis state).
    """
    path = os.fspath(path)
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, delete=False,
                                         prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        try:
            os.unlink(handle.name)
        except OSError:
            pass
        raise


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def recordings_dir() -> str:
    """``$LIVETIMING_RECORDINGS_DIR`` (default ``./recordings``)."""
    return os.environ.get("LIVETIMING_RECORDINGS_DIR") or "./recordings"


def build_analysis(recording: str | os.PathLike | RecordingFile,
                   report_progress: bool = False) -> dict:
    """The version 1 analysis of a recording, as a dict (see ``generate_analysis``)."""
    from livetiming.analysis import ANALYSED_FIELDS, Analyser, FieldExtractor

    owned = not isinstance(recording, RecordingFile)
    rec = RecordingFile(recording) if owned else recording
    try:
        manifest = rec.augmentedManifest()
        analyser = Analyser(str(manifest.get("uuid") or ""), None, persist=False)
        progress = None
        if report_progress:
            from tqdm import tqdm

            progress = tqdm(total=rec.frames, unit="frame", file=sys.stderr,
                            desc=os.path.basename(rec.filename), mininterval=0.2)
        # Between keyframes only the columns analysis reads (in any column spec the
        # recording used) are kept up to date; the final state is rebuilt in full.
        keep = set()
        for colspec in rec.colspecs():
            extractor = FieldExtractor(colspec)
            keep.update(index for index in map(extractor.index, ANALYSED_FIELDS) if index is not None)
        done = 0
        for second, state, new_messages, _keyframe in rec.iter_frames(frozenset(keep)):
            analyser.receiveStateUpdate(state, rec.colspec_at(second), second, new_messages)
            analyser.commit()
            done += 1
            if progress is not None and done % 50 == 0:
                progress.update(50)
        if progress is not None:
            progress.update(done % 50)
            progress.close()
        data = analyser.get_current_state()
        data["state"] = rec.getStateAtTimestamp(rec.seconds[-1])
        data["service"] = manifest
        return data
    finally:
        if owned:
            rec.close()


def generate_analysis(recording: str | os.PathLike | RecordingFile, out_file: str | os.PathLike,
                      report_progress: bool = False) -> dict:
    """Write the version 1 analysis file of ``recording`` to ``out_file`` (atomically).

    Returns the data written.
    """
    data = build_analysis(recording, report_progress)
    write_json_atomically(out_file, data)
    return data


def index_key(filename: str) -> str:
    """The index key of a recording file: its name without ``.zip``, first ``_`` as ``:``."""
    base = os.path.basename(filename)
    if base.endswith(".zip"):
        base = base[:-4]
    return base.replace("_", ":", 1)


def index_entry(path: str, manifest: dict) -> dict:
    """The index entry of a recording from its augmented manifest."""
    base = os.path.basename(path)
    entry: dict[str, Any] = {
        "description": manifest.get("description", ""),
        "duration": manifest.get("duration", 0),
        "filename": base,
        "name": manifest.get("name", ""),
        "startTime": manifest.get("startTime"),
        "uuid": manifest.get("uuid") or index_key(base),
    }
    if manifest.get("hidden"):
        entry["hidden"] = True
    if manifest.get("external"):
        entry["external"] = manifest["external"]
    return entry


def finalise_abandoned(directory: str, log: Log = _stderr) -> list[str]:
    """Finalise every journal in ``directory`` that no live recorder holds; returns their ZIPs."""
    done = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return done
    for name in names:
        if not name.endswith(".zip" + JOURNAL_SUFFIX):
            continue
        journal = os.path.join(directory, name)
        if is_locked(journal):
            continue
        zip_path = journal[:-len(JOURNAL_SUFFIX)]
        try:
            finalise(zip_path)
        except Exception as error:  # one line per bad file, then carry on
            log(f"Could not finalise abandoned recording journal {journal}: {error}")
            continue
        log(f"Finalised abandoned recording journal {journal}")
        done.append(zip_path)
    return done


def _load_index(index_file: str, log: Log) -> dict:
    try:
        with open(index_file, encoding="utf-8") as handle:
            index = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log(f"Rebuilding unreadable index {index_file}: {error}")
        return {}
    if not isinstance(index, dict):
        log(f"Rebuilding index {index_file}: not an object")
        return {}
    return index


def update_recordings_index(index_file: str | os.PathLike | None = None, log: Log = _stderr,
                            generate: bool | None = None) -> dict:
    """Bring ``index_file`` (default ``$LIVETIMING_RECORDINGS_DIR/index.json``) up to date.

    Entries of deleted files are dropped; new recordings, and recordings
    changed since the index was last written, are (re)read. ``hasAnalysis``
    is true when ``<name>.json`` exists next to ``<name>.zip``; with
    ``generate`` (default: the ``GENERATE_ANALYSIS`` environment variable)
    missing analysis files are generated. Returns the index.
    """
    if index_file is None:
        index_file = os.path.join(recordings_dir(), "index.json")
    index_file = os.fspath(index_file)
    directory = os.path.dirname(os.path.abspath(index_file))
    os.makedirs(directory, exist_ok=True)
    if generate is None:
        generate = bool(os.environ.get("GENERATE_ANALYSIS"))
    finalise_abandoned(directory, log)
    index = _load_index(index_file, log)
    try:
        index_time = os.path.getmtime(index_file)
    except OSError:
        index_time = None
    files = sorted(name for name in os.listdir(directory) if name.endswith(".zip"))
    present = {index_key(name): name for name in files}
    for key in list(index):
        if key not in present:
            log(f"Removing deleted recording {key} from the index")
            del index[key]
    for key, name in present.items():
        path = os.path.join(directory, name)
        stale = index_time is None or os.path.getmtime(path) > index_time
        if key not in index or stale or not isinstance(index.get(key), dict):
            try:
                with RecordingFile(path) as recording:
                    manifest = recording.augmentedManifest()
            except (RecordingException, OSError, ValueError) as error:
                log(f"Not a valid recording file: {path} ({error})")
                index.pop(key, None)
                continue
            previous = index.get(key)
            index[key] = index_entry(path, manifest)
            if isinstance(previous, dict) and "external" in previous and "external" not in index[key]:
                index[key]["external"] = previous["external"]
            log(f"Indexed {name} ({index[key]['uuid']})")
        analysis_file = os.path.join(directory, name[:-4] + ".json")
        has_analysis = os.path.isfile(analysis_file)
        if not has_analysis and generate:
            try:
                generate_analysis(path, analysis_file)
                has_analysis = True
                log(f"Generated analysis for {name}")
            except Exception as error:
                log(f"Could not generate analysis for {name}: {error}")
        index[key]["hasAnalysis"] = has_analysis
    write_json_atomically(index_file, index)
    return index


# ----- console scripts -----------------------------------------------------------------


def analysis_main(argv: list[str] | None = None) -> None:
    """``livetiming-analysis RECORDING [-o OUT]``: write a recording's analysis file."""
    parser = argparse.ArgumentParser(
        prog="livetiming-analysis",
        description="Write the (version 1) analysis file of a Timing71 recording.")
    parser.add_argument("recording", help="recording ZIP (a crashed recording's journal is read too)")
    parser.add_argument("-o", "--output", default=None,
                        help="output file (default: data.out.json in the working directory)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    out = args.output or "data.out.json"
    try:
        data = generate_analysis(args.recording, out, report_progress=not args.quiet)
    except (RecordingException, OSError) as error:
        print(f"livetiming-analysis: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if not args.quiet:
        print(f"Wrote analysis of {len(data['static'])} cars to {out}", file=sys.stderr)


def index_main(argv: list[str] | None = None) -> None:
    """``livetiming-recordings-index``: update ``index.json`` in ``$LIVETIMING_RECORDINGS_DIR``."""
    from livetiming import load_env

    load_env()
    parser = argparse.ArgumentParser(
        prog="livetiming-recordings-index",
        description="Update index.json of the recordings directory ($LIVETIMING_RECORDINGS_DIR).")
    parser.add_argument("index_file", nargs="?", default=None,
                        help="index file (default: $LIVETIMING_RECORDINGS_DIR/index.json)")
    parser.add_argument("--generate-analysis", action="store_true", default=None,
                        help="generate missing analysis files (also GENERATE_ANALYSIS=1)")
    args = parser.parse_args(argv)
    index = update_recordings_index(args.index_file, generate=args.generate_analysis)
    print(f"{len(index)} recording{'' if len(index) == 1 else 's'} indexed", file=sys.stderr)
