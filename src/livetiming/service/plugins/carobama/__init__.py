"""Live timing from Emperor Servers (Assetto Corsa Server Manager) and BMI karting feeds."""

from livetiming.service.plugins.carobama.service import VERSION as __version__
from livetiming.service.plugins.carobama.service import Service, create_argument_parser

__all__ = ["Service", "create_argument_parser", "__version__"]
