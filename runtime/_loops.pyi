"""Type stub of leashed.runtime._loops: the nogil worker loops (runtime/_loops.pyx). It has no Python API;
runtime/_workers.pyx cimports its C entry point ``worker_main`` (declared in runtime/_loops.pxd)."""
