"""Build hook for the optional C compressor (``livetiming.service._lzstring``).

Everything else is declared in ``pyproject.toml``. The extension is optional: without a C
compiler the build goes on and the pure-Python compressor is used (same output, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("livetiming.service._lzstring", ["src/livetiming/service/_lzstring.c"],
                             optional=True)])
