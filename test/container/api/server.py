"""Test scaffolding: the smallest stand-in for the CODI API that codi:slim ships.

GET /healthz answers at once (the image's APP_HEALTH_URL). POST /ask sends the prompt to the LLM that
`codi-adapter run` gives the app in LLM_ENDPOINT (llama-server's /completion) and returns its text. It
uses urllib, which honours the HTTP_PROXY/NO_PROXY air-gap guard run sets, as a real client would.
"""

import json
import os
import urllib.error
import urllib.request

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()


class Ask(BaseModel):
    prompt: str
    n_predict: int = 8


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@app.post("/ask")
def ask(body: Ask) -> dict:
    endpoint = os.environ.get("LLM_ENDPOINT")
    if not endpoint:
        raise HTTPException(status_code=503, detail="LLM_ENDPOINT is not set: run started the app with no LLM")
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/completion",
        data=json.dumps(
            {"prompt": body.prompt, "n_predict": body.n_predict, "temperature": 0, "cache_prompt": False}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise HTTPException(status_code=502, detail=f"LLM at {endpoint}: {e}") from e
    return {"text": answer.get("content", ""), "tokens": answer.get("tokens_predicted"), "endpoint": endpoint}
