"""Measure what autosave costs per request (not a test: it takes minutes while the gap is open).

    .venv/bin/python tests/reliability/autosave_cost.py [requests]

Runs the same requests through UniScaleChat with in-process model answers, without and with `state_path`,
and prints the wall time of each block of 250 and the number of pending decisions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_rel_load import InstantClient, _specs

from uniscale_lc.chat_model import UniScaleChat


async def main(requests: int) -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        for state_path in (None, str(Path(folder) / "router.npz")):
            chat = UniScaleChat(models=_specs(), client=InstantClient(), state_path=state_path)
            started = time.perf_counter()
            for index in range(requests):
                await chat.ainvoke(f"question {index}")
                if (index + 1) % 250 == 0:
                    print(
                        f"state_path={'set' if state_path else 'none'}: {index + 1} requests in "
                        f"{time.perf_counter() - started:.1f} s, pending {chat.stats()['pending']}",
                        flush=True,
                    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
