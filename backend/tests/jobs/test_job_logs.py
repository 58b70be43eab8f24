"""What a training job writes to the server's terminal (what an operator needs) and to its own log (the rest)."""

from __future__ import annotations

import io
import logging
import threading
from contextlib import contextmanager

from app.core import joblogs


@contextmanager
def transformers_terminal():
    """What transformers' own stderr handler writes, read from a buffer for the duration."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger()  # makes transformers' handler if it is not made yet
    handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    assert handlers, "transformers' stderr handler"
    buffer = io.StringIO()
    previous = [h.setStream(buffer) for h in handlers]
    try:
        yield buffer
    finally:
        for handler, stream in zip(handlers, previous):
            handler.setStream(stream)


def test_a_job_thread_s_chatter_goes_to_its_log_not_the_terminal(tmp_path):
    from transformers.utils import logging as hf_logging

    router = joblogs.install(tmp_path / "logs")
    hf_logger = hf_logging.get_logger("transformers.trainer")

    def job_thread():
        router.bind("job-a")
        try:
            hf_logger.info("Training completed. Do not forget to share your model on huggingface.co/models =)")
            hf_logger.warning("a job's own warning")
            hf_logger.error("a job's error")
        finally:
            router.unbind()

    with transformers_terminal() as terminal:
        thread = threading.Thread(target=job_thread)
        thread.start()
        thread.join()
        hf_logger.warning("an operator's warning")  # not on a job's thread
    text = terminal.getvalue()
    assert "share your model" not in text and "a job's own warning" not in text
    assert "a job's error" in text and "an operator's warning" in text
    log = "\n".join(router.read("job-a"))
    assert "share your model" in log and "a job's own warning" in log and "a job's error" in log


def test_a_trained_job_prints_no_per_step_dicts_or_model_configs(make_manager, tiny_config, capsys):
    manager = make_manager(runner=None, preflight=True)
    with transformers_terminal() as terminal:
        job = manager.wait_for_job(manager.submit(tiny_config).job_id, timeout=120)
    assert job["status"] == "completed"
    text = terminal.getvalue() + capsys.readouterr().out
    assert "'loss':" not in text and "{'train_runtime'" not in text
    assert "share your model" not in text and "Config {" not in text
    log = "\n".join(manager.logs.read(job["job_id"]))
    assert "share your model" in log
