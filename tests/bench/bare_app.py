"""The ceiling for the gateway benchmark: a minimal FastAPI POST route returning a small JSON, on the same uvicorn.

Served by ``tests/bench/bench_gateway.py`` as ``uvicorn.run(app, ...)`` with the options the services use
(``vigil.service.app.run``), so the two figures differ only by what the gateway does per request.
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def predict(body: dict[str, Any]) -> dict[str, Any]:
    """Echo a small answer: what any JSON POST route costs on this stack."""
    return {"ok": True, "rows": len(body)}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
