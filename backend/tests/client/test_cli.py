"""The ``sft`` command against a live server training the tiny model, run as a user runs it."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import threading
from pathlib import Path

from client_helpers import JOB_TIMEOUT, REPO, cli_command, cli_env, write_yaml
from factories import MISSING, contact_rows, free_port, wait_for, write_jsonl

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def adapter_line(stdout: str) -> Path:
    match = re.search(r"^Adapter: (.+)$", stdout, re.MULTILINE)
    assert match, stdout
    return Path(match.group(1).strip())


def test_train_follow_ends_with_exit_0_and_prints_the_adapter_path(sft, server, job_config, tmp_path):
    run = sft("train", str(write_yaml(tmp_path / "job.yaml", job_config)), "--set", "max_steps=3", "--follow")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Step 3/3: loss" in run.stdout
    assert "completed: 3 steps, train_loss" in run.stdout
    adapter = adapter_line(run.stdout)
    assert (adapter / "adapter_config.json").is_file()
    job_id = re.search(r"^Job (\S+) submitted", run.stdout, re.MULTILINE).group(1)
    assert server.job(job_id)["result"]["adapter_path"] == str(adapter)
    assert "\x1b[" not in run.stdout  # not a terminal: no colours, no bar


def test_broken_config_exits_2_and_prints_the_servers_detail(sft, job_config, tmp_path):
    config = write_yaml(tmp_path / "job.yaml", {**job_config, "lora_rank": 8})
    run = sft("train", str(config))
    assert run.returncode == 2
    assert "Error 400: config.lora_rank: unknown field (did you mean lora_r?)" in run.stderr

    run = sft("train", str(config), "--json")
    assert run.returncode == 2
    error = json.loads(run.stderr)
    assert error["status_code"] == 400
    assert error["detail"] == "config.lora_rank: unknown field (did you mean lora_r?)"


def test_follow_of_a_failing_job_exits_1_with_the_error_and_its_log_tail(sft, server, job_config):
    dataset = server.data_dir / "soon-broken.jsonl"
    write_jsonl(dataset, contact_rows(32))
    # A long job holds the only training slot, so the second one waits while its dataset breaks
    # (after the submit's checks, as a file changing on disk would).
    holder = server.api("POST", "/train", json={"config": {**job_config, "max_steps": 100_000}})["job_id"]
    doomed = server.api("POST", "/train", json={"config": {**job_config, "dataset_name": str(dataset)}})["job_id"]
    assert server.job(doomed)["status"] == "pending"
    dataset.write_text('{"messages": "not a list"}\n')
    server.api("POST", f"/jobs/{holder}/stop", headers={"Content-Type": "application/json"})

    run = sft("follow", doomed)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"Job {doomed} failed (dataset): {dataset}, line 1: field 'messages' must be a non-empty list" in run.stdout
    printed = run.stdout.split("Last log lines:\n", 1)[1].splitlines()
    log_tail = server.job(doomed)["error_detail"]["log_tail"]
    assert log_tail and printed == ["  " + line for entry in log_tail for line in entry.splitlines()]
    assert server.wait_until_ended(holder)["status"] == "stopped"


def test_local_usage_errors_exit_2(cli, job_config, tmp_path):
    run = cli("train", str(tmp_path / "missing.yaml"))
    assert run.returncode == 2 and f"cannot read {tmp_path / 'missing.yaml'}" in run.stderr
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "must hold a mapping" in cli("train", str(tmp_path / "list.yaml")).stderr
    run = cli("train", str(write_yaml(tmp_path / "job.yaml", job_config)), "--set", "max_steps")
    assert run.returncode == 2 and "expected KEY=VALUE" in run.stderr
    run = cli("train")
    assert run.returncode == 2 and "CONFIG.yaml or --from-config" in run.stderr
    assert cli("jobs", "--limit", "many").returncode == 2  # argparse's own usage error
    run = cli("show", MISSING)
    assert run.returncode == 2 and f"Error 404: Job {MISSING} not found" in run.stderr


def test_set_values_are_read_as_yaml_and_dotted_keys_reach_into_mappings():
    from sft_client.cli import apply_sets

    config = apply_sets({"column_mapping": {"prompt": "q"}, "max_steps": 40},
                        ["max_steps=10", "learning_rate=1e-3", "use_lora=false", "lora_target_modules=[q_proj, v_proj]",
                         "column_mapping.completion=a", "output_dir=runs/x"])
    assert config == {"column_mapping": {"prompt": "q", "completion": "a"}, "max_steps": 10, "learning_rate": 0.001,
                      "use_lora": False, "lora_target_modules": ["q_proj", "v_proj"], "output_dir": "runs/x"}


def test_unreachable_server_exits_3():
    port = free_port()
    done = subprocess.run(cli_command(f"http://127.0.0.1:{port}", "health"), env=cli_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    assert f"cannot reach the SFT server at http://127.0.0.1:{port}" in done.stderr


def test_json_output_of_every_command_parses(cli, trained_job, job_config, tmp_path):
    job_id = trained_job["job_id"]
    assert json.loads(cli("show", job_id, "--json").stdout)["result"]["global_step"] == 2
    page = json.loads(cli("--json", "jobs", "--status", "completed", "--limit", "5").stdout)
    assert job_id in [j["job_id"] for j in page["jobs"]] and page["limit"] == 5
    assert json.loads(cli("health", "--json").stdout)["status"] == "ok"
    assert "smollm2-135m-instruct" in {m["name"] for m in json.loads(cli("models", "--json").stdout)}
    events = [json.loads(line) for line in cli("events", job_id, "--json").stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["type"] == "completed"
    follow = [json.loads(line) for line in cli("follow", job_id, "--json").stdout.splitlines()]
    assert follow[:-1] == events and follow[-1]["job_id"] == job_id
    assert json.loads(cli("logs", job_id, "--json", "--tail", "1").stdout)["lines"][-1].endswith(
        "event completed: Training completed")
    followed_logs = cli("logs", job_id, "-f", "--tail", "3", "--json")
    assert followed_logs.returncode == 0
    assert [json.loads(line) for line in followed_logs.stdout.splitlines()] == json.loads(
        cli("logs", job_id, "--tail", "3", "--json").stdout)["lines"]
    followed_events = cli("events", job_id, "-f", "--json")
    assert followed_events.returncode == 0 and [json.loads(line) for line in followed_events.stdout.splitlines()] == events
    generated = json.loads(cli("generate", job_id, "hello 3", "--max-new-tokens", "4", "--compare-base",
                               "--json").stdout)
    assert generated["completion_tokens"] <= 4 and generated["base_completion"] is not None
    scores = json.loads(cli("evaluate", job_id, "--max-samples", "2", "--max-new-tokens", "4", "--json").stdout)
    assert scores["tuned"]["n"] == 2 and 0 <= scores["base"]["exact_match"] <= 1
    merged = json.loads(cli("merge", job_id, "--json").stdout)
    assert (Path(merged["merged_path"]) / "config.json").is_file()
    downloaded = json.loads(cli("download", job_id, "-o", str(tmp_path / "adapter"), "--json").stdout)
    assert "adapter_config.json" in downloaded["files"]
    stop = cli("stop", job_id, "--json")
    assert stop.returncode == 2 and json.loads(stop.stderr)["status_code"] == 409

    config = write_yaml(tmp_path / "job.yaml", job_config)
    saved = json.loads(cli("configs", "save", "cli-json", str(config), "--set", "max_steps=1", "--json").stdout)
    assert saved["config_id"] in [c["config_id"] for c in json.loads(cli("configs", "list", "--json").stdout)]
    assert json.loads(cli("configs", "show", "cli-json", "--json").stdout)["config"]["max_steps"] == 1
    run = cli("train", "--from-config", "cli-json", "--set", "max_steps=2", "--follow", "--json")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[0]["status"] in ("pending", "running")
    assert lines[-2]["type"] == "completed"
    assert lines[-1]["job_id"] == lines[0]["job_id"] and lines[-1]["result"]["global_step"] == 2
    assert json.loads(cli("configs", "rm", "cli-json", "--json").stdout)["config_id"] == saved["config_id"]
    assert cli("configs", "show", "cli-json").returncode == 2


def test_download_unpacks_an_adapter_that_peft_loads(cli, server, trained_job, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job_id, served = trained_job["job_id"], Path(trained_job["result"]["adapter_path"])
    target = tmp_path / "downloaded" / "adapter"
    run = cli("download", job_id, "-o", str(target))
    assert run.returncode == 0, run.stderr
    assert f"unpacked into {target}" in run.stdout
    assert (target / "adapter_model.safetensors").read_bytes() == (served / "adapter_model.safetensors").read_bytes()
    base = AutoModelForCausalLM.from_pretrained(server.data_dir / "tiny-model")
    model = PeftModel.from_pretrained(base, target)
    lora = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora and any(torch.count_nonzero(p) for p in lora)  # trained, not the zero init

    again = cli("download", job_id, "-o", str(target))
    assert again.returncode == 2 and "not an empty directory" in again.stderr


class PtyRun:
    """The command on a pseudo-terminal, as a person at a terminal sees it (Rich draws its bar)."""

    def __init__(self, args: list[str]):
        master, slave = pty.openpty()
        env = cli_env(TERM="xterm", COLUMNS="160", LINES="40")
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
                                        close_fds=True)
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # the command has exited and closed the terminal
                break
            if not data:
                break
            self._chunks.append(data)

    def text(self) -> str:
        return ANSI.sub("", b"".join(self._chunks).decode("utf-8", "replace")).replace("\r", "\n")

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        os.close(self._master)
        return code


def test_export_waits_downloads_lists_and_deletes(cli, trained_job, tmp_path):
    job_id = trained_job["job_id"]
    assert "gguf" in json.loads(cli("export-formats", "--json").stdout)["formats"]
    done = cli("export", job_id, "--format", "adapter", "-o", str(tmp_path / "exported"))
    assert done.returncode == 0, done.stderr
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in (tmp_path / "exported").iterdir()}
    assert str(tmp_path / "exported" / "adapter_model.safetensors") in done.stdout
    exports = json.loads(cli("exports", job_id, "--json").stdout)
    adapter = next(e for e in exports if e["format"] == "adapter")
    assert adapter["status"] == "completed"
    # The tiny model's made-up tokenizer is not one llama.cpp's converter knows: the export fails, exit 1.
    failed = cli("export", job_id, "--format", "gguf", "--type", "q8_0")
    assert failed.returncode == 1 and "does not recognise this model's tokenizer" in failed.stderr
    deleted = json.loads(cli("exports", job_id, "--rm", adapter["export_id"], "--json").stdout)
    assert deleted["export_id"] == adapter["export_id"]
    assert adapter["export_id"] not in [e["export_id"] for e in json.loads(cli("exports", job_id, "--json").stdout)]


def test_plain_output_lines_up_and_generate_says_tokens_and_latency(cli, trained_job):
    job_id = trained_job["job_id"]
    lines = cli("jobs", "--status", "completed", "--limit", "5").stdout.splitlines()
    header, row = lines[0], next(line for line in lines if line.startswith(job_id))
    assert "\t" not in header + row
    for column in ("STATUS", "MODEL", "DATASET", "STEP", "CREATED"):  # each value starts under its heading
        start = header.index(column)
        assert row[start - 2:start] == "  " and row[start] != " ", (column, header, row)
    generated = cli("generate", job_id, "hello 3", "--max-new-tokens", "4")
    assert re.fullmatch(r"\d+ tokens in [\d,]+ ms\n", generated.stderr), generated.stderr
    compared = cli("generate", job_id, "hello 3", "--max-new-tokens", "4", "--compare-base")
    assert len(re.findall(r"\d+ tokens in [\d,]+ ms", compared.stderr)) == 2


def test_follow_survives_a_server_restart_and_the_bar_continues(server, job_config):
    config = {**job_config, "max_steps": 150, "save_steps": 5}
    job_id = server.api("POST", "/train", json={"config": config})["job_id"]
    follow = PtyRun(cli_command(server.url, "follow", job_id))
    try:
        wait_for(lambda: ((server.job(job_id)["progress"] or {}).get("current_step") or 0) >= 12,
                 timeout=JOB_TIMEOUT, interval=0.05, message="a few checkpoints")
        wait_for(lambda: re.search(r"\b\d+/150\b", follow.text()), timeout=30, message="the bar")
        server.kill()
        server.start()
        code = follow.wait(timeout=JOB_TIMEOUT)
    finally:
        if follow.process.poll() is None:
            follow.process.kill()
    text = follow.text()
    assert code == 0, text[-3000:]
    lost = text.index("Connection to the server lost")
    back = text.index("Reconnected; following the job again", lost)
    assert "resuming from checkpoint" in text[back:]
    steps_after = [int(n) for n in re.findall(r"\b(\d+)/150\b", text[back:])]
    assert steps_after and max(steps_after) == 150 and min(steps_after) < 150  # the bar moved on
    assert "ETA" in text and "tok/s" in text and "loss" in text
    assert f"Job {job_id} completed: 150 steps" in text
    job = server.job(job_id)
    assert [a["status"] for a in job["attempts"]] == ["interrupted", "completed"]
    assert f"Adapter: {job['result']['adapter_path']}" in text


def interrupt_follow(server, job_id: str, *extra: str) -> tuple[int, str, str]:
    """Follow ``job_id``, press Ctrl-C once training has begun; the exit code and what was printed."""
    process = subprocess.Popen(cli_command(server.url, "follow", job_id, *extra), env=cli_env(), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "loss" not in seen:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        seen += line
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=JOB_TIMEOUT)
    return process.returncode, seen + stdout, stderr


def test_ctrl_c_leaves_the_job_running_unless_stop_on_interrupt(server, job_config):
    job_id = server.api("POST", "/train", json={"config": {**job_config, "max_steps": 100_000}})["job_id"]
    try:
        code, _, stderr = interrupt_follow(server, job_id)
        assert code == 130
        assert f"Job {job_id} keeps running on the server" in stderr
        assert server.job(job_id)["status"] == "running"

        code, stdout, stderr = interrupt_follow(server, job_id, "--stop-on-interrupt")
        assert code == 1, stdout + stderr
        assert "waiting for it to stop" in stderr
        assert f"Job {job_id} stopped at step" in stdout
        assert server.job(job_id)["status"] == "stopped"
    finally:
        if server.job(job_id)["status"] not in ("completed", "failed", "stopped"):
            server.api("POST", f"/jobs/{job_id}/stop", headers={"Content-Type": "application/json"})
        server.wait_until_ended(job_id)
