"""Profile bridge server: serves any llmsim ``.pb`` profile (or LLMServingSim bundle).

``python -m adapters.profile --profile PATH [--model config.json] --port 0`` or
``llmsim bridge serve profile --profile PATH --port 0``. Answers match the in-process
profile cost model step for step (see :mod:`adapters.profile.coster`).
"""

from adapters.profile.coster import ProfileCoster

__all__ = ["ProfileCoster"]
