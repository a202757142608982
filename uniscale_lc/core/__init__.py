"""Helpers of the framework-free core (`uniscale_lc.router.Router`): configuration, messages, records.

Nothing here imports a front-end framework (LangChain, LlamaIndex, an ASGI stack).
"""
