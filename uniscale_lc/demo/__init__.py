"""The offline demo: seeded arithmetic problems, a SIMULATED model pool on a loopback server, and `run_demo`.

`run_demo` is imported lazily from `uniscale_lc.demo.run` (it pulls in LangChain and, on first request,
litellm); `problems` and `pool` are light.
"""
