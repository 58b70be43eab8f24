"""A newcomer's whole path in a real Chromium: the bundled demo trained from the New job form, exported to GGUF
from the job page and downloaded; the file names its base model, its job and its true size, and answers in real
llama.cpp as /generate does."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import llama_answers, wait_for
from web_helpers import running_server, web_env

pytestmark = pytest.mark.slow

EVAL_ROWS = Path(__file__).resolve().parents[2] / "app" / "demo" / "json_extract" / "eval.jsonl"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, tiny_model_dir, shared_model_cache):
    root = tmp_path_factory.mktemp("demo-web")
    env = web_env(root, tiny_model_dir, OMP_NUM_THREADS="2", SFT_MODEL_CACHE_DIR=str(shared_model_cache))
    with running_server(root, env) as server:
        yield server


def test_the_demo_from_the_form_to_a_gguf_that_answers_in_llama_cpp(page, demo_server, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    from app.sft.evaluation import load_rows

    server = demo_server
    page.goto(f"{server.url}/#/new")
    page.click("#demo-config")
    # A function, not an expression: the page's CSP (no unsafe-eval) refuses a polled expression string.
    page.wait_for_function("() => document.querySelector('#f-base_model').value === 'smollm2-135m-instruct'")
    page.fill("#f-max_steps", "8")  # enough to move the answers; the demo's 40 are the README's
    page.click("#submit-job")
    page.wait_for_url(lambda url: "#/jobs/" in url, timeout=60_000)
    job_id = page.url.rsplit("/", 1)[-1]
    wait_for(lambda: server.api("GET", f"/api/sft/jobs/{job_id}").json()["status"] in ("completed", "failed"),
             timeout=900, interval=2, message="the demo job to end")
    assert server.api("GET", f"/api/sft/jobs/{job_id}").json()["status"] == "completed"

    page.reload()
    page.locator("#export-type option", has_text="q8_0").wait_for(state="attached", timeout=60_000)
    page.select_option("#export-format", "gguf")
    page.select_option("#export-type", "q8_0")
    page.click("#export-button")
    row = page.locator("#exports-table tbody tr", has=page.locator("td", has_text="q8_0"))
    row.locator(".export-status", has_text="completed").wait_for(timeout=900_000)
    with page.expect_download(timeout=120_000) as download:
        row.locator("a.export-file", has_text=".gguf").click()
    gguf_file = tmp_path / download.value.suggested_filename
    download.value.save_as(gguf_file)

    reader = gguf.GGUFReader(gguf_file)
    text = {key: bytes(reader.fields[key].parts[reader.fields[key].data[0]]).decode()
            for key in ("general.name", "general.basename", "general.size_label")}
    assert text == {"general.name": f"SmolLM2-135M-Instruct sft-{job_id[:8]}",
                    "general.basename": "SmolLM2-135M-Instruct", "general.size_label": "135M"}

    chats = [row["messages"][:-1] for row in load_rows(EVAL_ROWS)[:3]]
    served = [server.api("POST", f"/api/sft/jobs/{job_id}/generate", json={"messages": chat, "max_new_tokens": 40})
              .json()["completion"] for chat in chats]
    adapter = server.api("GET", f"/api/sft/jobs/{job_id}").json()["result"]["adapter_path"]
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    answers = llama_answers(gguf_file, [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
                                        for chat in chats], max_tokens=40)
    assert sum(a == b for a, b in zip(answers, served)) >= 2, (answers, served)
