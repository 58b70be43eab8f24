"""Section 8: the same greedy completion through POST /api/sft/jobs/{id}/generate, the OpenAI-compatible
POST /v1/chat/completions and its stream: first token and total."""

from __future__ import annotations

import json
import time

from .harness import Bench, log
from .service import Service
from .stats import median


CHAT_PROMPT = [{"role": "user", "content": "Extract the contact as JSON: Ada Lovelace, 36, lives in London."}]


def chat_section(bench: Bench, server: Service) -> dict:
    """The same greedy completion through /generate, /v1/chat/completions and its stream, alternating.

    /generate answers once the completion is whole, so its first token is its total. The streamed
    first token is the first chunk with text (transformers' streamer hands over whole words).
    """
    plan = bench.plan
    run = server.run_job(bench.config(1), poll=plan.poll)
    job = server.client.get(f"/v1/fine_tuning/jobs/{run.job_id}").json()
    model = job["fine_tuned_model"]
    generate = {"messages": CHAT_PROMPT, "max_new_tokens": plan.chat_tokens}
    chat = {"model": model, "messages": CHAT_PROMPT, "max_completion_tokens": plan.chat_tokens, "temperature": 0}
    log(f"chat: {plan.chat_rounds} rounds of /generate, /v1/chat/completions, and its stream ({model})")

    def post(path: str, body: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        response = server.client.post(path, json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text}")
        return elapsed, response.json()

    def stream() -> tuple[float, float, str]:
        started, first, text = time.perf_counter(), None, ""
        with server.client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content")
                if delta and first is None:
                    first = time.perf_counter() - started
                text += delta or ""
        return first if first is not None else time.perf_counter() - started, time.perf_counter() - started, text

    post(f"/api/sft/jobs/{run.job_id}/generate", generate)  # loads the model once, for all three
    times: dict[str, list[float]] = {"generate": [], "chat": [], "stream_first": [], "stream_total": []}
    same = True
    for _ in range(plan.chat_rounds):
        elapsed, generated = post(f"/api/sft/jobs/{run.job_id}/generate", generate)
        times["generate"].append(elapsed)
        elapsed, answer = post("/v1/chat/completions", chat)
        times["chat"].append(elapsed)
        first, total, text = stream()
        times["stream_first"].append(first)
        times["stream_total"].append(total)
        same = same and generated["completion"] == answer["choices"][0]["message"]["content"] == text
    medians = {key: median(values) * 1000 for key, values in times.items()}
    return {"model": model, "rounds": plan.chat_rounds, "tokens": plan.chat_tokens,
            "completion_tokens": generated["completion_tokens"], "same_text": same, "median_ms": medians,
            "ratio_chat": medians["chat"] / medians["generate"],
            "ratio_stream_total": medians["stream_total"] / medians["generate"],
            "ratio_stream_first": medians["stream_first"] / medians["generate"]}
