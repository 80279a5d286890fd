"""medrun: config-driven experiment runner for medical image deep learning."""
__all__ = ["compose", "build_model", "build_datamodule", "train"]
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `medrun --help` and `medrun list` do not pay for importing Lightning and smp.
    if name in __all__ or name == "api":
        import importlib

        api = importlib.import_module("medrun.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'medrun' has no attribute {name!r}")
