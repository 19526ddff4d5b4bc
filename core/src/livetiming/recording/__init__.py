"""Timing71 recordings: writing (``TimingRecorder``), reading (``RecordingFile``) and tools.

The format is the ZIP of ``timing71-wire.md`` §5.1, readable by the
original framework and by the Timing71 web app's replay. How a recording
survives a crash is explained in ``zipstore.py``; the frame rules in
``recorder.py``.
"""

from livetiming.recording.reader import RecordingFile, applyIntraFrame
from livetiming.recording.recorder import INTRA_FRAMES, TimingRecorder
from livetiming.recording.tools import generate_analysis, update_recordings_index
from livetiming.recording.zipstore import RecordingException, finalise

__all__ = [
    "INTRA_FRAMES",
    "RecordingException",
    "RecordingFile",
    "TimingRecorder",
    "applyIntraFrame",
    "finalise",
    "generate_analysis",
    "update_recordings_index",
]
