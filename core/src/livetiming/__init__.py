"""livetiming: the Timing71 live-timing framework (clean-room implementation)."""
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
VERSION = "1.0.0"
