"""Build the Cython fast path.  Metadata lives in pyproject.toml.

Only the hot modules are compiled (falcon's lesson: compiling plain Python
modules can make them slower).  SWITCHBOARD_NO_CYTHON=1 skips the build, and
the package then runs on the pure-Python reference only.
"""
import os

from setuptools import setup

ext_modules = []
if os.environ.get("SWITCHBOARD_NO_CYTHON") != "1":
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension("fastpath._engine", ["fastpath/_engine.pyx"], extra_compile_args=["-O2"]),
         Extension("fastpath._caller_numbers", ["fastpath/_caller_numbers.pyx"], extra_compile_args=["-O2"]),
         Extension("fastpath._icm_lookup", ["fastpath/_icm_lookup.pyx"], extra_compile_args=["-O2"]),
         Extension("fastpath._esl_frames", ["fastpath/_esl_frames.pyx"], extra_compile_args=["-O2"])],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
