"""agegender: age and gender estimation from face images.

The library API, for use from Python (the CLI, `agegender --help`, is built on the same functions):

    from agegender import Predictor, evaluate, fit, load_config

    result = fit(load_config(overrides=["data.path=faces/"]), "runs/a")  # -> FitResult, typed metrics
    print(evaluate(Predictor.from_checkpoint(result.run_dir / "best.safetensors"), "faces/", split="test").report)
    print(Predictor.from_checkpoint().predict("photo.jpg").to_dict())  # the bundled model

Names are imported on first use, so `import agegender` stays light (the CLI starts without torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Predictor": "agegender.inference.predictor",
    "Prediction": "agegender.inference.predictions",
    "FacePrediction": "agegender.inference.predictions",
    "fit": "agegender.training.fit",
    "resume": "agegender.training.fit",
    "FitResult": "agegender.training.results",
    "FitMetrics": "agegender.training.results",
    "evaluate": "agegender.evaluation.evaluate",
    "Evaluation": "agegender.evaluation.evaluate",
    "load_config": "agegender.config",
    "RunConfig": "agegender.config",
}
__all__ = [  # the keys of _EXPORTS, spelled out for tools that read __all__ statically
    "__version__", "Predictor", "Prediction", "FacePrediction", "fit", "resume", "FitResult", "FitMetrics",
    "evaluate", "Evaluation", "load_config", "RunConfig",
]  # fmt: skip

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from agegender.config import RunConfig, load_config
    from agegender.evaluation.evaluate import Evaluation, evaluate
    from agegender.inference.predictions import FacePrediction, Prediction
    from agegender.inference.predictor import Predictor
    from agegender.training.fit import fit, resume
    from agegender.training.results import FitMetrics, FitResult


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agegender' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
