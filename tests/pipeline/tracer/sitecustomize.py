"""Put on PYTHONPATH by the pipeline tests: an `elite` process started while ELITE_IMPORT_TRACE names a
folder writes there, at exit, its arguments and the `elite/` modules it imported, so the tests can check
that dvc.yaml lists the code each stage really runs. Every other process is left alone."""

import atexit
import json
import os
import sys

_TRACE = os.environ.get("ELITE_IMPORT_TRACE")

if _TRACE and os.path.basename(sys.argv[0]) == "elite":

    def _dump() -> None:
        files = sorted(
            {
                str(getattr(m, "__file__", None))
                for m in list(sys.modules.values())
                if getattr(m, "__file__", None) and m.__name__.split(".")[0] == "elite"
            }
        )
        with open(os.path.join(_TRACE, f"{os.getpid()}.json"), "w") as out:
            json.dump({"argv": sys.argv[1:], "files": files}, out)

    atexit.register(_dump)
