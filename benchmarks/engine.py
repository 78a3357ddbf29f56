"""Per-inference latency of whole models: voxquant vs onnxruntime vs LiteRT (one thread).

The measuring code is ``voxquant/bench.py`` (shared with ``voxquant bench``)::

    python benchmarks/engine.py [--rounds 15] [--calls 50] [--json OUT.json] [--markdown]
"""

import sys

from voxquant.bench import main

if __name__ == "__main__":
    sys.exit(main())
