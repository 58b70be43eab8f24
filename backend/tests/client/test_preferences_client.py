"""Preferences through the Python clients (sync and async) and ``sft preferences``, against an in-process server
whose runner trains nothing (a GateRunner): the calls, their answers, the file written, the exit codes."""

from __future__ import annotations

import asyncio
import json

import pytest
from sft_client import AsyncSFTClient, SFTClient
from sft_client.cli import main

from factories import wait_for
from job_helpers import lora_adapter_saver

PROMPT = [{"role": "user", "content": "Extract the contact as JSON: Ada, 36."}]


@pytest.fixture
def served(manager, serve_app, fake_config, tiny_model_dir):
    """A completed job of the tiny model holding a real (untrained) adapter, on an in-process server."""
    from app.main import create_app

    manager.runner.before_return = lora_adapter_saver(tiny_model_dir)
    job_id = manager.submit({**fake_config, "base_model": str(tiny_model_dir)}).job_id
    manager.runner.release(job_id)
    wait_for(lambda: manager.get_job(job_id).status.value == "completed", timeout=10, message="the job")
    return serve_app(create_app(manager=manager)), job_id, manager


def sft(capsys, base_url: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--url", base_url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_client_keeps_lists_downloads_and_deletes_preferences(served, tmp_path):
    base_url, job_id, _ = served
    with SFTClient(base_url) as client:
        kept = client.add_preference(job_id, prompt=PROMPT, chosen='{"name": "Ada"}', rejected="Ada.",
                                     source="picked_tuned")
        assert kept.job_id == job_id and kept.prompt[0].content == PROMPT[0]["content"]
        page = client.list_preferences(job_id=job_id)
        assert page.total == 1 and page.preferences[0].id == kept.id
        saved = client.download_preferences(tmp_path / "p.jsonl", job_id=job_id)
        assert [json.loads(line)["chosen"] for line in saved.read_text().splitlines()] == [
            [{"role": "assistant", "content": '{"name": "Ada"}'}]]
        assert client.delete_preference(kept.id).id == kept.id

    async def from_async():
        async with AsyncSFTClient(base_url) as client:
            await client.add_preference(job_id, prompt=PROMPT, chosen="A", rejected="B", source="corrected")
            path = await client.download_preferences(tmp_path / "a.jsonl")
            return (await client.list_preferences()).total, path.read_text(), await client.delete_preferences(job_id)

    total, text, deleted = asyncio.run(from_async())
    assert total == 1 and json.loads(text)["rejected"] == [{"role": "assistant", "content": "B"}]
    assert deleted.deleted == 1


def test_sft_preferences_add_list_download_delete(served, capsys, tmp_path):
    base_url, job_id, _ = served
    code, out, _ = sft(capsys, base_url, "preferences", "add", job_id, "--prompt", "Ada, 36", "--chosen",
                       '{"name": "Ada", "age": 36}', "--rejected", "Ada is 36", "--json")
    assert code == 0
    kept = json.loads(out)
    assert kept["source"] == "corrected" and kept["prompt"] == [{"role": "user", "content": "Ada, 36"}]
    code, out, _ = sft(capsys, base_url, "preferences", "list", "--job", job_id)
    assert code == 0 and kept["id"] in out and "corrected" in out and "Ada is 36" in out
    code, out, _ = sft(capsys, base_url, "preferences")
    assert code == 0 and kept["id"] in out
    target = tmp_path / "prefs.jsonl"
    code, out, _ = sft(capsys, base_url, "preferences", "download", "--job", job_id, "-o", str(target))
    assert code == 0 and out.strip() == f"Saved 1 preferences to {target}"
    assert json.loads(target.read_text())["prompt"] == kept["prompt"]
    code, _, err = sft(capsys, base_url, "preferences", "add", job_id, "--prompt", "p", "--chosen", " ",
                       "--rejected", "r")
    assert code == 2 and "chosen: no text; the preferred answer must say something" in err
    code, _, err = sft(capsys, base_url, "preferences", "delete")
    assert code == 2 and "needs one preference ID or --job JOB_ID" in err
    code, out, _ = sft(capsys, base_url, "preferences", "delete", "--job", job_id)
    assert code == 0 and out.strip() == f"Deleted 1 preferences of job {job_id}"
    code, _, err = sft(capsys, base_url, "preferences", "delete", kept["id"])
    assert code == 2 and f"Preference {kept['id']} not found" in err


def test_sft_preferences_train_submits_a_dpo_job_from_the_tuned_job(served, capsys):
    """Needs DPO jobs (the dpo branch): ``method: "dpo"`` and ``beta`` must validate."""
    base_url, job_id, manager = served
    sft(capsys, base_url, "preferences", "add", job_id, "--prompt", "p", "--chosen", "good", "--rejected", "bad")
    code, out, err = sft(capsys, base_url, "preferences", "train", job_id, "--set", "max_steps=2", "--set",
                         "beta=0.2", "--json")
    assert code == 0, err
    started = json.loads(out)
    config = manager.get_job(started["job_id"]).config
    merged = f"{manager.get_job(job_id).output_dir}/merged"  # job:<id> becomes that job's model at submit
    assert (config["method"], config["base_model"], config["max_steps"], config["beta"]) == ("dpo", merged, 2, 0.2)
    assert started["preferences"] == 1 and started["file_id"].startswith("file-")
