"""The benchmark scripts, installed as ``leashed.benchmarks`` so that ``leashed bench`` finds them in a wheel.

Each script also runs on its own (``python benchmarks/limit.py --help``); they import their sibling
``_common`` by putting this folder on ``sys.path`` (docs/benchmarks.md).
"""
