"""dgmbench: a benchmark and reproducibility suite for deep generative models."""

__version__ = "0.1.0"

# The Python API (dgmbench/api.py, docs/python-api.md) is imported on first use of one of its names, so that
# `import dgmbench` (and every `dgmbench` command's start-up) does not pay for torch.
_API = ("load_run", "LoadedRun", "test_images", "nll", "iwae", "NLLEstimate", "sample_quality", "code_length",
        "CodeLength")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
